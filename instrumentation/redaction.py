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
import threading
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
# The scan only returns runs worth a look: at least 7 characters long (the shortest number we redact, an IPv4
# address like 1.1.1.1), or right after two capital letters (an IBAN's country code).
_RUN_SEPARATORS = " ().+/-"
_DIGIT = re.compile(r"\d")
_ASCII_DIGITS = "0123456789"


def _number_runs(iban: bool, ascii_only: bool) -> re.Pattern[str]:
    """The run scan; ``ascii_only`` spells ``\\d`` as ``[0-9]`` (the same on ASCII text, and scanned faster)."""
    digit = "[0-9]" if ascii_only else r"\d"
    char = f"[{digit[1:-1] if ascii_only else digit} ().+/-]"
    long_enough = f"(?={char}{{6}})"
    lead = f"(?:(?<=[A-Z]{{2}}{digit})|{long_enough})" if iban else long_enough
    return re.compile(f"{digit}{lead}{char}*")


_NUMBER_RUNS = {
    (iban, ascii_only): _number_runs(iban, ascii_only)
    for iban in (False, True)
    for ascii_only in (False, True)
}
# What a run must contain for each detector to possibly match inside it (checked before running its regex):
# cards have 13-19 digits, an SSN 9 digits and dashes, an IPv4 address three dots, a phone 9-15 digits.
_CARD_DIGITS = 13
_SSN_DIGITS = 9
_PHONE_DIGITS = 9
_EMAIL_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _has_digit(text: str) -> bool:
    """Whether ``text`` has a decimal digit: ten ``memchr`` scans for ASCII text, a regex scan otherwise."""
    if text.isascii():
        return any(map(text.__contains__, _ASCII_DIGITS))
    return _DIGIT.search(text) is not None


def _has_key_hint(text: str) -> bool:
    # Each token is tested only when a rare character of it occurs (single-character tests are memchr-fast).
    return (
        ("-" in text and ("sk-" in text or "xox" in text))
        or ("B" in text and "Bearer" in text)
        or ("J" in text and "eyJ" in text)
        or ("K" in text and "AKIA" in text)
        or ("z" in text and "AIza" in text)
        or ("_" in text and ("gh" in text or "github_pat_" in text))
    )


def _has_ipv6_shape(text: str) -> bool:
    return ":" in text and ("::" in text or text.count(":") >= 7)


HOOK_FAILED_PLACEHOLDER = "[REDACTED:HOOK_ERROR]"
MEMO_CHARACTERS = 1 << 20
MEMO_LONGEST = 1 << 16


class _Memo:
    """Recently redacted strings and their results, the oldest forgotten first once they hold more than
    ``MEMO_CHARACTERS`` characters. Apps send the same system prompt and the same conversation history with every
    call, and redaction is the costliest part of recording them; a repeated string costs one dict lookup."""

    __slots__ = ("_characters", "_lock", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, int]] = {}  # read without the lock: a dict lookup is atomic
        self._characters = 0
        self._lock = threading.Lock()

    def remember(self, text: str, result: tuple[str, int]) -> None:
        if len(text) > MEMO_LONGEST:
            return
        with self._lock:
            entries = self.entries
            if text in entries:
                return
            entries[text] = result
            self._characters += _held(text, result)
            while self._characters > MEMO_CHARACTERS:
                oldest = next(iter(entries))
                self._characters -= _held(oldest, entries.pop(oldest))


def _held(text: str, result: tuple[str, int]) -> int:
    return len(text) + (len(result[0]) if result[0] is not text else 0)


class Redactor:
    """Applies the configured detectors, user patterns and hook to one string at a time."""

    __slots__ = (
        "_api_key",
        "_card",
        "_email",
        "_hook",
        "_hook_failed_logged",
        "_iban",
        "_ipv4",
        "_ipv6",
        "_memo",
        "_numbers",
        "_phone",
        "_ssn",
        "_user",
        "active",
    )

    def __init__(
        self, detectors: Sequence[Detector] = BUILTIN_DETECTORS, hook: RedactHook | None = None
    ) -> None:
        chosen = set(detectors)
        self._api_key = API_KEY in chosen
        self._email = EMAIL in chosen
        self._iban = IBAN in chosen
        self._card = CREDIT_CARD in chosen
        self._ssn = US_SSN in chosen
        self._ipv4 = IPV4 in chosen
        self._phone = PHONE in chosen
        self._ipv6 = IPV6 in chosen
        self._numbers = self._iban or self._card or self._ssn or self._ipv4 or self._phone
        self._user = tuple(d for d in detectors if d not in BUILTIN_DETECTORS)
        self._memo = _Memo() if chosen else None
        self._hook = hook
        self._hook_failed_logged = False
        self.active = bool(chosen) or hook is not None

    def redact(self, text: str) -> tuple[str, int]:
        """Return ``text`` with every confirmed match replaced, and how many replacements were made."""
        memo = self._memo
        if memo is not None:
            known = memo.entries.get(text)
            if known is None:
                known = self._detect(text)
                memo.remember(text, known)
            text, count = known
        else:
            count = 0
        if self._hook is not None:
            text, changed = self._run_hook(text)
            count += changed
        return text, count

    def _detect(self, text: str) -> tuple[str, int]:
        """The built-in detectors and the user patterns: a pure function of ``text``, hence remembered."""
        claims: list[tuple[int, int, str]] = []
        if self._api_key and _has_key_hint(text):
            _claim(API_KEY, text, 0, len(text), claims)
        if self._email and "@" in text:
            _claim_emails(text, claims)
        if self._numbers and _has_digit(text):
            self._claim_numbers(text, claims)
        if self._ipv6 and _has_ipv6_shape(text):
            _claim(IPV6, text, 0, len(text), claims)
        count = len(claims)
        if claims:
            text = _apply(text, claims)
        for detector in self._user:
            text, n = _replace_all(detector, text)
            count += n
        return text, count

    def _claim_numbers(self, text: str, claims: list[tuple[int, int, str]]) -> None:
        check_iban = self._iban
        for run in _NUMBER_RUNS[check_iban, text.isascii()].finditer(text):
            start, end = run.span()
            if (
                check_iban
                and start >= 2
                and "A" <= text[start - 2] <= "Z"
                and "A" <= text[start - 1] <= "Z"
                and _claim(IBAN, text, start - 2, len(text), claims, True)
            ):
                continue
            if end - start < 7:
                continue
            found = run.group()
            digits = len(found) - sum(map(found.count, _RUN_SEPARATORS))
            if start and text[start - 1] in "+(":
                start -= 1
            if self._card and digits >= _CARD_DIGITS:
                _claim(CREDIT_CARD, text, start, end, claims)
            if self._ssn and digits >= _SSN_DIGITS and "-" in found:
                _claim(US_SSN, text, start, end, claims)
            if self._ipv4 and found.count(".") >= 3:
                _claim(IPV4, text, start, end, claims)
            if self._phone and digits >= _PHONE_DIGITS:
                _claim(PHONE, text, start, end, claims)

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


def _claim_emails(text: str, claims: list[tuple[int, int, str]]) -> None:
    """What ``_claim(EMAIL, text, 0, len(text), claims)`` finds, trying the regex only where a match can start.

    A match contains exactly one "@" and its local part is the run of local-part characters before it, so the
    leftmost match using a given "@" can only start where that run starts: one anchored match per "@" instead of
    an attempt at every position of the text."""
    pattern = EMAIL.pattern
    local = _EMAIL_LOCAL_CHARS
    done = 0  # where the previous match ended: like finditer, matches never overlap
    at = text.find("@")
    while at >= 0:
        start = at
        while start > done and text[start - 1] in local:
            start -= 1
        match = pattern.match(text, start) if start < at else None
        if match is None:
            at = text.find("@", at + 1)
            continue
        m_start, m_end = match.span()
        if not _overlaps(m_start, m_end, claims):
            claims.append((m_start, m_end, EMAIL.placeholder))
        done = m_end
        at = text.find("@", m_end)


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
