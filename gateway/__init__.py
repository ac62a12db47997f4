"""dicom-gateway: the node that receives, de-identifies, indexes, serves and forwards studies.

This package is where config, storage and anonymizer meet: the pynetdicom AE
and its handlers, the workers, the scheduler wiring and the ``dicom-gateway``
command line (``gateway.cli``). Importing it has no side effects.
"""

__all__: list[str] = []
