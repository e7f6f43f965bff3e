"""SpiritLM as a model family (:class:`~spiritlens.models.spiritlm.family.SpiritLM`): the one place its
token names, prompt rules and checkpoint tree are spelled (``vocab.py``, ``prompt.py``, ``tree.py``)."""
