"""Text attributes outside Table E.1-1 that are kept as they are.

Table E.1-1 lists what is known to identify, but devices also write
identifying text into attributes it does not list (code meanings, document
titles, free-text comments inside sequences). So a text attribute (AE, LO,
LT, SH, ST, UC, UR, UT) that the table does not name is cleaned (action C:
the instance's own identifiers removed) unless it is named here: attributes
that hold enumerated values, codes or technical acquisition parameters and
so cannot carry a person's identity. Attributes of VR CS, DS, IS, AS and the
binary VRs are codes or numbers by definition and are kept; PN attributes
the table does not list get a dummy; UIDs are replaced unless well-known.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

__all__ = ["SAFE_TEXT_KEYWORDS", "SAFE_TEXT_TAGS"]

SAFE_TEXT_KEYWORDS: frozenset[str] = frozenset(
    {
        # coded entries (PS3.3 8.8): the code itself, never its meaning
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "LongCodeValue",
        "URNCodeValue",
        "MappingResource",
        "MappingResourceName",
        "ContextIdentifier",
        "ContextGroupExtensionFlag",
        "TemplateIdentifier",
        "CodingSchemeName",
        "CodingSchemeResponsibleOrganization",
        # equipment make and technical acquisition parameters
        "Manufacturer",
        "ManufacturerModelName",
        "ConvolutionKernel",
        "FilterType",
        "SequenceName",
        "PulseSequenceName",
        "ReceiveCoilName",
        "TransmitCoilName",
        "ImagedNucleus",
        "AcquisitionContrast",
        "CoilString",
        "TransducerData",
        "ProcessingFunction",
        "TypeOfFilters",
        # display and value interpretation
        "WindowCenterWidthExplanation",
        "RescaleType",
        "LUTExplanation",
        "LossyImageCompressionMethod",
        "MIMETypeOfEncapsulatedDocument",
        "MeasurementUnitsCodeSequence",
        "TextFormattingInformation",
        "FrameType",
    }
)

SAFE_TEXT_TAGS: frozenset[int] = frozenset(
    tag for tag in (tag_for_keyword(k) for k in SAFE_TEXT_KEYWORDS) if tag is not None
)
