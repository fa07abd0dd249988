"""The project's recognizers, each in its own module; `pipelines.privacy.analyzer` registers them."""
