"""Build of monbridge's optional C accelerators (everything else is in pyproject.toml).

Each extension is a measured hot path with a pure-Python twin that gives the same results (the
module's docstring says what was measured); ``optional=True``: where no C compiler or Python
headers exist, the install goes on without it and the pure-Python path runs. The test suite
fails in CI (``CI=true``) when an extension is missing, so a build that silently lost one
cannot pass there. The helpers they share are in bridge/_fastcommon.h (on each one's include
path; pyproject.toml's package data ships it in the sdist).
"""

from setuptools import Extension, setup

EXTENSIONS = [
    ("bridge._pipefast", ["bridge/_pipefast.c"]),
    ("integrations.datadog._dsdfast", ["integrations/datadog/_dsdfast.c"]),
    ("integrations.nagios._run", ["integrations/nagios/_run.c"]),
    ("integrations.prometheus._promfast", ["integrations/prometheus/_promfast.c"]),
]

COMMON = "bridge/_fastcommon.h"

setup(ext_modules=[Extension(name, sources, optional=True, extra_compile_args=["-O2"],
                             include_dirs=["bridge"], depends=[COMMON])
                   for name, sources in EXTENSIONS])
