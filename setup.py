import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

with open("dynamongo.py", encoding="utf-8") as module:
    version = re.search(r'^__version__ = "([^"]+)"', module.read(), re.M)[1]

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()


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


setup(
    name="dynamongo",
    version=version,
    description="A PyMongo-style object mapper for AWS DynamoDB",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    py_modules=["dynamongo"],
    cmdclass={"build_py": BuildTypedPackage},
    python_requires=">=3.10",
    install_requires=["boto3>=1.34"],
    extras_require={"test": ["pytest", "moto[server]>=5", "hypothesis"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Database",
        "Typing :: Typed",
    ],
)
