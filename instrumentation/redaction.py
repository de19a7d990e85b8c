"""Redaction of personal data and secrets from recorded content, before anything leaves the process.

Each built-in detector is a precompiled regex plus, where the format has one, a checksum that rules out look-alikes
(Luhn for card numbers, ISO 7064 mod-97 for IBANs, ``ipaddress`` for IPv6). Every detector also has a cheap
pre-check (a character that any match must contain), so text that cannot match costs a few substring tests
instead of a regex scan: that keeps redaction inside the per-call overhead budget.

Matches become typed placeholders such as ``[REDACTED:EMAIL]``; the number of replacements is reported so the
span can carry ``llmtap.redaction.count``. User patterns (``[REDACTED:<NAME>]``) and a user hook run after the
built-ins.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

_log = logging.getLogger(__name__)

RedactHook = Callable[[str], str]


def _luhn_ok(match: str) -> bool:
    digits = [ord(c) - 48 for c in match if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(match: str) -> bool:
    compact = match.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _phone_ok(match: str) -> bool:
    if _DATE_LIKE.match(match):
        return False
    return 9 <= sum(c.isdigit() for c in match) <= 15


def _ipv6_ok(match: str) -> bool:
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _always(_match: str) -> bool:
    return True


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive data: what it looks like and, when the format has one, how to confirm it."""

    name: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] = _always

    @property
    def placeholder(self) -> str:
        return f"[REDACTED:{self.name}]"


_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

API_KEY = Detector(
    "API_KEY",
    re.compile(
        r"(?:\bBearer\s+[A-Za-z0-9._~+/=-]{16,}"
        r"|\bsk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"
        r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
        r"|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{35}"
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{40,}"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,})"
    ),
)
EMAIL = Detector("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"))
IBAN = Detector("IBAN", re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"), _iban_ok)
CREDIT_CARD = Detector(
    "CREDIT_CARD",
    re.compile(r"(?<![\d-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -]?)\d{6}\2\d{4,5})(?![\d-])"),
    _luhn_ok,
)
US_SSN = Detector(
    "US_SSN", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
)
IPV4 = Detector("IP_ADDRESS", re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d]|\.\d)"))
PHONE = Detector(
    "PHONE",
    re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{2,4}(?:[ .-]?\d{2,5}){1,2}(?![\w.-]?\d)"
    ),
    _phone_ok,
)
IPV6 = Detector(
    "IP_ADDRESS",
    re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:|:(?=:)){1,7}(?::|(?::?[0-9A-Fa-f]{1,4}))+(?![\w:])"),
    _ipv6_ok,
)

# In the order they claim text: an earlier detector's match is never re-examined by a later one, so the loose
# phone pattern cannot eat part of a card number or an IBAN.
BUILTIN_DETECTORS: tuple[Detector, ...] = (API_KEY, EMAIL, IBAN, CREDIT_CARD, US_SSN, IPV4, PHONE, IPV6)
BUILTIN_NAMES = frozenset(d.name for d in BUILTIN_DETECTORS)

# Every number-shaped detector needs a run of digits and separators: one scan finds those runs, and the
# detectors only look inside them (a regex scan of the whole text per detector would cost several times more).
_NUMBER_RUN = re.compile(r"\d[\d ().+/-]*")
_NUMERIC_IN_RUN = (CREDIT_CARD, US_SSN, IPV4, PHONE)


def _has_key_hint(text: str) -> bool:
    return (
        "sk-" in text
        or "earer" in text
        or "eyJ" in text
        or "AKIA" in text
        or "AIza" in text
        or "xox" in text
        or ("_" in text and ("gh" in text or "github_pat_" in text))
    )


def _has_ipv6_shape(text: str) -> bool:
    return "::" in text or text.count(":") >= 7


HOOK_FAILED_PLACEHOLDER = "[REDACTED:HOOK_ERROR]"


class Redactor:
    """Applies the configured detectors, user patterns and hook to one string at a time."""

    __slots__ = ("_builtins", "_hook", "_hook_failed_logged", "_numeric", "_user", "active")

    def __init__(
        self, detectors: Sequence[Detector] = BUILTIN_DETECTORS, hook: RedactHook | None = None
    ) -> None:
        chosen = set(detectors)
        self._builtins = frozenset(d for d in BUILTIN_DETECTORS if d in chosen)
        self._numeric = tuple(d for d in _NUMERIC_IN_RUN if d in chosen)
        self._user = tuple(d for d in detectors if d not in self._builtins)
        self._hook = hook
        self._hook_failed_logged = False
        self.active = bool(chosen) or hook is not None

    def redact(self, text: str) -> tuple[str, int]:
        """Return ``text`` with every confirmed match replaced, and how many replacements were made."""
        claims: list[tuple[int, int, str]] = []
        builtins = self._builtins
        if API_KEY in builtins and _has_key_hint(text):
            _claim(API_KEY, text, 0, len(text), claims)
        if EMAIL in builtins and "@" in text:
            _claim(EMAIL, text, 0, len(text), claims)
        if self._numeric or IBAN in builtins:
            self._claim_numbers(text, claims)
        if IPV6 in builtins and _has_ipv6_shape(text):
            _claim(IPV6, text, 0, len(text), claims)
        count = len(claims)
        if claims:
            text = _apply(text, claims)
        for detector in self._user:
            text, n = _replace_all(detector, text)
            count += n
        if self._hook is not None:
            text, changed = self._run_hook(text)
            count += changed
        return text, count

    def _claim_numbers(self, text: str, claims: list[tuple[int, int, str]]) -> None:
        check_iban = IBAN in self._builtins
        for run in _NUMBER_RUN.finditer(text):
            start, end = run.span()
            prefix = text[start - 2 : start] if check_iban and start >= 2 else ""
            if (
                prefix.isupper()
                and prefix.isalpha()
                and _claim(IBAN, text, start - 2, len(text), claims, True)
            ):
                continue
            if end - start < 7:  # the shortest number we redact, an IPv4 address like 1.1.1.1
                continue
            if start and text[start - 1] in "+(":
                start -= 1
            for detector in self._numeric:
                _claim(detector, text, start, end, claims)

    def _run_hook(self, text: str) -> tuple[str, int]:
        # The hook exists to remove data the built-ins miss, so a failing hook fails closed: the text is dropped.
        try:
            result = self._hook(text)  # type: ignore[misc]
            if not isinstance(result, str):
                raise TypeError(f"redaction hook returned {type(result).__name__}, expected str")
        except Exception:
            if not self._hook_failed_logged:
                self._hook_failed_logged = True
                _log.exception(
                    "llmtap: the redaction hook failed; the affected content is replaced by %s",
                    HOOK_FAILED_PLACEHOLDER,
                )
            return HOOK_FAILED_PLACEHOLDER, 1
        return result, int(result != text)


def _overlaps(start: int, end: int, claims: list[tuple[int, int, str]]) -> bool:
    return any(start < c_end and c_start < end for c_start, c_end, _ in claims)


def _claim(
    detector: Detector,
    text: str,
    start: int,
    end: int,
    claims: list[tuple[int, int, str]],
    anchored: bool = False,
) -> bool:
    """Record confirmed, not yet claimed matches of ``detector`` in ``text[start:end]``; True if any."""
    matches = (
        (detector.pattern.match(text, start, end),)
        if anchored
        else detector.pattern.finditer(text, start, end)
    )
    found = False
    for match in matches:
        if match is None:
            continue
        m_start, m_end = match.span()
        if (detector.validate is _always or detector.validate(match.group())) and not _overlaps(
            m_start, m_end, claims
        ):
            claims.append((m_start, m_end, detector.placeholder))
            found = True
    return found


def _apply(text: str, claims: list[tuple[int, int, str]]) -> str:
    claims.sort()
    pieces = []
    pos = 0
    for start, end, placeholder in claims:
        pieces.append(text[pos:start])
        pieces.append(placeholder)
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def _replace_all(detector: Detector, text: str) -> tuple[str, int]:
    claims: list[tuple[int, int, str]] = []
    _claim(detector, text, 0, len(text), claims)
    return (_apply(text, claims), len(claims)) if claims else (text, 0)


def user_detectors(patterns: Mapping[str, str] | Iterable[str]) -> list[Detector]:
    """Compile user patterns (``{"NAME": regex}`` or a list of regexes named ``CUSTOM``); bad ones are logged."""
    items = patterns.items() if isinstance(patterns, Mapping) else (("CUSTOM", p) for p in patterns)
    detectors = []
    for name, regex in items:
        try:
            compiled = re.compile(regex)
        except (re.error, TypeError) as exc:
            _log.error("llmtap: ignoring redaction pattern %s=%r: %s", name, regex, exc)
            continue
        detectors.append(Detector(str(name).upper(), compiled))
    return detectors


def builtin_detectors(names: Iterable[str]) -> list[Detector]:
    """The built-in detectors whose names are given (case-insensitive); unknown names are logged and skipped."""
    wanted = {n.strip().upper() for n in names if n.strip()}
    for unknown in sorted(wanted - BUILTIN_NAMES):
        _log.error(
            "llmtap: unknown redaction detector %r (known: %s)", unknown, ", ".join(sorted(BUILTIN_NAMES))
        )
    return [d for d in BUILTIN_DETECTORS if d.name in wanted]


def _load_hook(spec: str) -> RedactHook | None:
    module_name, _, attr = spec.partition(":")
    try:
        import importlib

        hook = getattr(importlib.import_module(module_name), attr)
        if not callable(hook):
            raise TypeError(f"{spec} is not callable")
    except Exception as exc:
        _log.error(
            "llmtap: cannot load redaction hook %s=%r (expected 'module:function'): %s",
            ENV_REDACT_HOOK,
            spec,
            exc,
        )
        return None
    return hook


ENV_REDACT = "LLMTAP_REDACT"
ENV_REDACT_PATTERNS = "LLMTAP_REDACT_PATTERNS"
ENV_REDACT_HOOK = "LLMTAP_REDACT_HOOK"
_OFF_VALUES = frozenset({"none", "off", "false", "0", "no"})
_ALL_VALUES = frozenset({"", "all", "true", "1", "yes", "on"})


def build_redactor(
    redact: bool | Iterable[str] | None = None,
    patterns: Mapping[str, str] | Sequence[str] | None = None,
    hook: RedactHook | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Redactor:
    """Combine explicit options with the ``LLMTAP_REDACT*`` environment variables (explicit options win)."""
    if redact is None:
        value = environ.get(ENV_REDACT, "").strip().lower()
        if value in _OFF_VALUES:
            detectors: list[Detector] = []
        elif value in _ALL_VALUES:
            detectors = list(BUILTIN_DETECTORS)
        else:
            detectors = builtin_detectors(value.split(","))
    elif redact is True:
        detectors = list(BUILTIN_DETECTORS)
    elif redact is False:
        detectors = []
    else:
        detectors = builtin_detectors(redact)

    if patterns is None and environ.get(ENV_REDACT_PATTERNS):
        try:
            patterns = json.loads(environ[ENV_REDACT_PATTERNS])
            if not isinstance(patterns, (dict, list)):
                raise ValueError("expected a JSON object or array")
        except ValueError as exc:
            _log.error(
                "llmtap: ignoring %s (expected a JSON object {name: regex} or a list of regexes): %s",
                ENV_REDACT_PATTERNS,
                exc,
            )
            patterns = None
    if patterns:
        detectors.extend(user_detectors(patterns))

    if hook is None and environ.get(ENV_REDACT_HOOK):
        hook = _load_hook(environ[ENV_REDACT_HOOK])
    return Redactor(detectors, hook)
