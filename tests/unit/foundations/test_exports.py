"""Names are importable where users look for them (the README's tour uses these)."""

from __future__ import annotations

import subprocess
import sys


def test_speech_prompt_is_exported_where_users_look():
    import spiritlens
    import spiritlens.align
    from spiritlens.align.speech_prompt import SpeechPrompt

    assert spiritlens.SpeechPrompt is spiritlens.align.SpeechPrompt is SpeechPrompt
    assert {"SpeechPrompt", "trace_kinds"} <= set(spiritlens.__all__) and "SpeechPrompt" in spiritlens.align.__all__


def test_importing_spiritlens_stays_light():
    # the package's names load on first use: `import spiritlens` pulls in neither torch nor transformers
    code = "import sys, spiritlens; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
