"""Reading configs and printing help must stay cheap: no TensorFlow or Keras import."""

import subprocess
import sys


def test_config_and_cli_do_not_import_tensorflow_or_keras():
    code = ("import sys\n"
            "import sfg_app.config, sfg_app.cli.train, sfg_app.cli.infer\n"
            "import sfg_app.cli.evaluate, sfg_app.cli.groups\n"
            "sfg_app.config.reference_text()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'torch', 'jax'))\n"
            "print(heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
