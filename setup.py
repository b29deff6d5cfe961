import re

from setuptools import setup

with open("dynamongo.py", encoding="utf-8") as module:
    version = re.search(r'^__version__ = "([^"]+)"', module.read(), re.M)[1]

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="dynamongo",
    version=version,
    description="A PyMongo-style object mapper for AWS DynamoDB",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    py_modules=["dynamongo"],
    python_requires=">=3.10",
    install_requires=["boto3>=1.34"],
    extras_require={"test": ["pytest", "moto[server]>=5", "hypothesis"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Database",
    ],
)
