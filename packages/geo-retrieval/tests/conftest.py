pytest_plugins = ["geo_transforms.testing.plugin"]
