"""The OpenMRS destination profile: a FHIR destination whose server assigns its own ids (OpenMRS FHIR2).

See ``connector`` for how it delivers and ``profile`` for what it changes in each resource.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
