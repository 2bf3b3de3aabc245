"""The licence the package declares is the one it ships: `LICENSE` is the Apache License 2.0 verbatim and setup.cfg
puts it in every built distribution (checked by building a wheel by hand: `pip wheel . --no-deps -w DIR` gives
`trl_gsm8k-*.dist-info/licenses/LICENSE` and `License-File: LICENSE` in METADATA)."""

import configparser
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the text many of our dependencies ship as their LICENSE
# (datasets' dist-info holds this very file).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_is_the_apache_2_0_text_and_setup_cfg_ships_it():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["license"] == "Apache-2.0"
    assert "License :: OSI Approved :: Apache Software License" in metadata["metadata"]["classifiers"]
    assert metadata["metadata"]["license_files"].split() == ["LICENSE"]
    text = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License\n                           Version 2.0, January 2004" in text
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256, "LICENSE is not the Apache-2.0 text verbatim"
