"""The narrative ``div`` checked against FHIR R4's narrative rules (narrative.html, txt-1, txt-2).

A narrative is XHTML that any client may render, so it is parsed with a real XML parser
(the standard library's expat, which expands no external entity and knows no entity but
the five of XML and character references) and checked for:

* one root ``div`` in the XHTML namespace, every element in that namespace;
* only the basic HTML formatting elements and attributes txt-1 allows (the element and
  attribute lists of the HL7 reference validator), so no ``script``, ``object``,
  ``applet``, ``iframe``, ``form``, ``style`` element, ``base``, ``link``…;
* no event-handler attribute (``onclick``…: not in the allowed list) and no ``href`` or
  ``src`` with a ``javascript:``/``vbscript:`` URL;
* no document type declaration, entity declaration or processing instruction.

txt-2 ("some non-whitespace content") is not enforced: official R4 examples
(EventDefinition-example, Questionnaire-zika-virus-exposure-assessment…) break it.

``narrative_problem(text)`` returns None for a good narrative, else a message that quotes
no content of the narrative (messages may be logged).
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError, XMLParser

__all__ = ["narrative_problem"]

_XHTML = "{http://www.w3.org/1999/xhtml}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_ELEMENTS = frozenset(
    "p br div h1 h2 h3 h4 h5 h6 a span b em i strong small big tt dfn q var abbr acronym cite "
    "blockquote hr address bdo kbd sub sup ul ol li dl dt dd pre table caption colgroup col thead "
    "tr tfoot tbody th td code samp img map area".split()
)
_ATTRIBUTES = frozenset(
    "title style class id lang dir accesskey tabindex span colspan rowspan align valign width "
    "height border cellpadding cellspacing frame rules summary abbr axis headers scope char "
    "charoff href name src alt longdesc usemap shape coords start type value cite datetime "
    "hreflang rel rev charset nohref compact".split()
)
# "<!DOCTYPE", "<!ENTITY", "<?php": declarations and processing instructions have no place here.
_DECLARATION = re.compile(r"<!(?!--)(?!\[CDATA\[)|<\?")
# Browsers ignore whitespace and control characters inside a scheme ("java\tscript:").
_SCRIPT_URL = re.compile(r"^(?:javascript|vbscript|livescript):", re.IGNORECASE)
_URL_NOISE = re.compile(r"[\x00-\x20]")


def narrative_problem(text: str) -> str | None:
    """None if ``text`` is an acceptable FHIR narrative ``div``, else what is wrong with it."""
    if _DECLARATION.search(text):
        return "narrative: declarations and processing instructions are not allowed"
    parser = XMLParser()
    try:
        parser.feed(text)
        root = parser.close()
    except ParseError as exc:
        return f"narrative is not well-formed XHTML ({_parse_reason(exc)})"
    if root.tag != _XHTML + "div":
        return "narrative must be a single div element in the XHTML namespace"
    for element in root.iter():
        problem = _element_problem(element)
        if problem:
            return problem
    return None


def _element_problem(element: Element) -> str | None:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(_XHTML):
        return "narrative: every element must be in the XHTML namespace (txt-1)"
    name = tag[len(_XHTML) :]
    if name not in _ELEMENTS:
        return f"narrative: element <{name}> is not allowed (txt-1)"
    for attribute, value in element.attrib.items():
        if attribute == _XML_LANG:
            continue
        if attribute not in _ATTRIBUTES:
            shown = attribute if attribute.isascii() and len(attribute) <= 40 else "?"
            return f"narrative: attribute {shown} is not allowed on <{name}> (txt-1)"
        if attribute in ("href", "src") and _SCRIPT_URL.match(_URL_NOISE.sub("", value)):
            return f"narrative: script URLs are not allowed in {attribute} (txt-1)"
    return None


def _parse_reason(exc: ParseError) -> str:
    # expat's message names the problem and position, never the content.
    return str(exc).split(":", 1)[0] if ":" in str(exc) else str(exc)
