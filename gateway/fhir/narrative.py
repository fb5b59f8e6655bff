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

Cost: a narrative that is one ``div`` of plain text (what generated narratives often are)
is recognised by one regular expression. One whose only namespace declaration is the
root's and that holds no comment or CDATA section (nearly all others) is checked for
well-formedness by expat without callbacks, then its distinct start tags are judged from
the text. The rest is parsed by expat with each element judged as expat reports it.

``narrative_problem(text)`` returns None for a good narrative, else a message that quotes
no content of the narrative (messages may be logged).
"""

from __future__ import annotations

import re
from typing import Any
from xml.parsers import expat

from gateway.errors import RequestError

__all__ = ["narrative_problem"]

_XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"
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
#: Allowed elements as expat names them ("namespace name"), mapped to their bare names.
_ALLOWED = {f"{_XHTML_NS} {name}": name for name in _ELEMENTS}
_ROOT = f"{_XHTML_NS} div"
# "<!DOCTYPE", "<!ENTITY", "<?php": declarations and processing instructions have no place here.
_DECLARATION = re.compile(r"<!(?!--)(?!\[CDATA\[)|<\?")
# Browsers ignore whitespace and control characters inside a scheme ("java\tscript:").
_SCRIPT_URL = re.compile(r"^(?:javascript|vbscript|livescript):", re.IGNORECASE)
_URL_NOISE = re.compile(r"[\x00-\x20]")
# One div of text without markup, references or characters XML forbids: well-formed and
# allowed as it stands (anything else, however harmless, takes the parser).
_PLAIN = re.compile(
    r'<div xmlns="http://www\.w3\.org/1999/xhtml">[^<>&\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]*</div>\Z'
)


_ROOT_TAG = '<div xmlns="http://www.w3.org/1999/xhtml"'
# In a well-formed document: a start tag's name, and the attributes of a start tag that
# has any ("'>'" may stand inside a quoted value).
_NAME = re.compile(r"<([^\s/>!?]+)")
# A start tag whose name is not one of txt-1's elements.
_OTHER_ELEMENT = re.compile(r"<(?!(?:" + "|".join(sorted(_ELEMENTS, key=len, reverse=True)) + r")[\s/>])[^\s/>!?]")
_WITH_ATTRIBUTES = re.compile(r"""<[^\s/>!?]+(\s[^>"']*(?:(?:"[^"]*"|'[^']*')[^>"']*)*)>""")
_ATTRIBUTE_NAME = re.compile(r"""\s([^\s=/>]+)\s*=\s*(?:"[^"]*"|'[^']*')""")
_ATTRIBUTE = re.compile(r"""\s([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_URL_NAMES = frozenset({"href", "src"})
#: Attribute names the markup path accepts: txt-1's, ``xml:lang`` and the root's ``xmlns``.
_MARKUP_ATTRIBUTES = _ATTRIBUTES | {"xml:lang", "xmlns"}
_UNDECIDED = ""  # what _markup_problem says when the parser must decide (never a problem text)


# A lone surrogate (JSON parsers refuse them; a string built in Python may hold one).
_SURROGATE = "narrative is not well-formed XHTML (a character that is not Unicode text)"


class _Refused(RequestError):
    """Raised from inside the parser's callbacks: the first problem ends the parse."""


def narrative_problem(text: str) -> str | None:
    """None if ``text`` is an acceptable FHIR narrative ``div``, else what is wrong with it."""
    if _PLAIN.match(text):
        return None
    bang = "<!" in text
    if (bang or "<?" in text) and _DECLARATION.search(text):
        return "narrative: declarations and processing instructions are not allowed"
    if not bang and text.startswith(_ROOT_TAG) and text.count("xmlns") == 1:
        parser = expat.ParserCreate(namespace_separator=" ")
        try:
            parser.Parse(text, True)
        except expat.ExpatError as exc:
            return f"narrative is not well-formed XHTML ({_parse_reason(exc)})"
        except UnicodeEncodeError:
            return _SURROGATE
        problem = _markup_problem(text)
        if problem != _UNDECIDED:
            return problem
    return _parsed_problem(text)


def _markup_problem(text: str) -> str | None:
    """The problem of a well-formed narrative whose one namespace declaration is the root's.

    Every other element is then in the XHTML namespace (a prefix would be unbound), and
    with no comment or CDATA section every ``<`` opens a tag: ``_OTHER_ELEMENT`` finds a
    start tag of any other name. In well-formed XML what follows a name is only attributes with quoted
    values, so one scan of the tags that have attributes lists every attribute. All in
    regular expressions and set operations: Python loops only over ``href``/``src``
    values. ``_UNDECIDED`` when a prefixed name or a reference (``&#x09;`` in an ``href``)
    needs the parser.
    """
    if _OTHER_ELEMENT.search(text):
        name = next(n for n in _NAME.findall(text) if n not in _ELEMENTS)
        return f"narrative: element <{name}> is not allowed (txt-1)" if ":" not in name else _UNDECIDED
    attributes = " ".join(_WITH_ATTRIBUTES.findall(text))
    if not attributes:
        return None
    if "&" in attributes:
        return _UNDECIDED
    found = _ATTRIBUTE_NAME.findall(attributes)
    if not _MARKUP_ATTRIBUTES.issuperset(found):
        name = next(a for a in found if a not in _MARKUP_ATTRIBUTES)
        shown = name if name.isascii() and len(name) <= 40 else "?"
        return f"narrative: attribute {shown} is not allowed (txt-1)"
    if found.count("xmlns") > 1:
        return _UNDECIDED  # cannot happen with one "xmlns" in the text; the parser decides
    if "href" in attributes or "src" in attributes:
        # The aligned scan of every attribute: a quoted value may itself spell ' href="…"'.
        for attribute, double, single in _ATTRIBUTE.findall(attributes):
            if attribute in _URL_NAMES and _SCRIPT_URL.match(_URL_NOISE.sub("", double or single)):
                return f"narrative: script URLs are not allowed in {attribute} (txt-1)"
    return None


def _parsed_problem(text: str) -> str | None:
    parser = expat.ParserCreate(namespace_separator=" ")
    seen_root = False

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal seen_root
        if not seen_root:
            seen_root = True
            if name != _ROOT:
                raise _Refused("narrative must be a single div element in the XHTML namespace")
        problem = _element_problem(name, attributes)
        if problem:
            raise _Refused(problem)

    parser.StartElementHandler = start
    try:
        parser.Parse(text, True)
    except _Refused as refused:
        return str(refused)
    except expat.ExpatError as exc:
        return f"narrative is not well-formed XHTML ({_parse_reason(exc)})"
    except UnicodeEncodeError:
        return _SURROGATE
    return None


def _element_problem(name: str, attributes: dict[str, Any]) -> str | None:
    bare = _ALLOWED.get(name)
    if bare is None:
        if not name.startswith(_XHTML_NS + " "):
            return "narrative: every element must be in the XHTML namespace (txt-1)"
        return f"narrative: element <{name[len(_XHTML_NS) + 1 :]}> is not allowed (txt-1)"
    for attribute, value in attributes.items():
        if attribute in _ATTRIBUTES:
            if (attribute == "href" or attribute == "src") and _SCRIPT_URL.match(_URL_NOISE.sub("", value)):
                return f"narrative: script URLs are not allowed in {attribute} (txt-1)"
        elif attribute != _XML_LANG:
            # expat names a namespaced attribute "namespace name"; ElementTree spelled it "{namespace}name".
            shown = attribute if attribute.isascii() and len(attribute) <= 40 and " " not in attribute else "?"
            return f"narrative: attribute {shown} is not allowed on <{bare}> (txt-1)"
    return None


def _parse_reason(exc: expat.ExpatError) -> str:
    # expat's message names the problem and position, never the content.
    return str(exc).split(":", 1)[0] if ":" in str(exc) else str(exc)
