"""The one build step pyproject.toml cannot declare: installing the module
as a package marked typed (its metadata is in pyproject.toml)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildTypedPackage(build_py):
    """Installs the one module as the package ``dynamongo`` (the same file
    as its ``__init__.py``) beside a ``py.typed`` marker: PEP 561 lets only
    packages say they are typed, and type checkers then read dynamongo's
    annotations. An editable install keeps the module as it is."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        module = os.path.join(self.build_lib, "dynamongo.py")
        package = os.path.join(self.build_lib, "dynamongo")
        self.mkpath(package)
        self.copy_file(module, os.path.join(package, "__init__.py"))
        os.remove(module)
        with open(os.path.join(package, "py.typed"), "w"):
            pass


setup(cmdclass={"build_py": BuildTypedPackage})
