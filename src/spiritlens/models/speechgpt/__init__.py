"""SpeechGPT as a model family (:class:`~spiritlens.models.speechgpt.family.SpeechGPT`): the one place its
token names, prompt template and speech tokenizer files are spelled (``vocab.py``, ``prompt.py``,
``speech.py``). Source: 0nutation/SpeechGPT at commit b290011570431cc559546f841335170a9619fa72 (paths
below are under ``speechgpt/`` there)."""
