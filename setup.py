"""Build of monbridge's optional C accelerators (everything else is in pyproject.toml).

Each extension is a measured hot path with a pure-Python twin that gives the same results (the
module's docstring says what was measured); ``optional=True``: where no C compiler or Python
headers exist, the install goes on without it and the pure-Python path runs. The test suite
fails in CI (``CI=true``) when an extension is missing, so a build that silently lost one
cannot pass there.
"""

from setuptools import Extension, setup

EXTENSIONS = [
    ("bridge._pipefast", ["bridge/_pipefast.c"]),
    ("integrations.datadog._dsdfast", ["integrations/datadog/_dsdfast.c"]),
    ("integrations.nagios._run", ["integrations/nagios/_run.c"]),
    ("integrations.prometheus._promfast", ["integrations/prometheus/_promfast.c"]),
]

setup(ext_modules=[Extension(name, sources, optional=True, extra_compile_args=["-O2"])
                   for name, sources in EXTENSIONS])
