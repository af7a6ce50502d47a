import re

from setuptools import setup

VERSION = re.search(r'__version__ = "([^"]+)"', open("hvac_push/core/version.py", encoding="utf-8").read()).group(1)

setup(
    name="hvac-push",
    version=VERSION,
    description="Push live HVAC telemetry over WebSocket: a Twisted plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "hvac_push",
        "hvac_push.core",
        "hvac_push.sources",
        "hvac_push.analytics",
        "hvac_push.store",
        "hvac_push.transport",
        "hvac_push.ops",
        "hvac_push.client",
        "twisted.plugins",
    ],
    package_data={"twisted.plugins": ["hvacpush_plugin.py", "hvacpush_reuseport.py"], "hvac_push": ["py.typed", "static/*", "static/examples/*"]},
    install_requires=[
        "twisted[tls]>=24.3",  # ssl: listeners (wss://) need pyOpenSSL and service_identity
        "autobahn>=24.4",
        "pyjwt[crypto]>=2.8",
        "prometheus_client>=0.17",
        "paho-mqtt>=2",
        "pymodbus>=3.16",
        "psycopg[binary]>=3.1",  # --store postgresql://... (SQLite, the default, is in the standard library)
        "websockets>=13",  # hvac_push.client and the hvac-push command (asyncio, no Twisted)
        "pint>=0.23",  # units of measure of derived-point inputs (hvac_push.analytics.units)
        "bacpypes3>=0.0.100",  # BACnet/IP source (asyncio, run in its producer thread)
        "protobuf>=7.35.1,<8",  # Sparkplug B payloads (hvac_push/sources/sparkplug_b_pb2.py, made by protoc 7.35.1)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-xdist>=3.5",  # scripts/test: test files run in parallel workers (-n, --dist loadfile)
            "coverage>=7.10",  # scripts/test: patch = subprocess measures twistd children too (.coveragerc)
            "hypothesis>=6",
            "psutil>=5",
            "types-psutil",
            "types-docutils",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "sphinx>=7",
            "myst-parser>=2",
            "playwright>=1.40",
            "jsonschema>=4",  # tests/test_asyncapi.py checks real messages against docs/asyncapi.yaml
            "pyyaml>=6",
            "types-PyYAML",
            "types-jsonschema",
            "types-protobuf",
            "grpcio-tools",  # protoc: tests/test_sparkplug.py checks sparkplug_b_pb2.py against its .proto
        ],
        "docs": ["sphinx>=7", "myst-parser>=2"],
        "bench": ["websockets>=13", "psutil>=5"],
    },
    entry_points={"console_scripts": ["hvac-push = hvac_push.ops.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Monitoring",
    ],
)
