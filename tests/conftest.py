pytest_plugins = [
    "tests.fixtures.spark",
    "tests.fixtures.kafka",
    "tests.fixtures.kube",
    "tests.fixtures.s3",
    "tests.fixtures.prometheus",
]
