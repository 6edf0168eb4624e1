"""The pre-scan of a pickle stream, before the C unpickler sees it: memo indices, argument
lengths, nesting depth and integer sizes are checked against the stream itself, and the
memory its objects can take is bounded (REFERENCES.md section 6)."""

from __future__ import annotations

import pickle
import struct

# Deeper nesting is never written by torch.save; the bound keeps CPython's unguarded
# recursions (hashing nested tuples) far from the C stack limit.
_MAX_DEPTH = 100
# Integers from the file are bounded before any arithmetic or formatting touches them:
# LONG1 / LONG4 payloads of at most 64 bytes and INT / LONG lines of at most 160 digits
# (the legacy format's magic number takes 10 bytes), then every size, stride, offset and
# element count below 2**63.
_MAX_INT_BYTES = 64
_MAX_INT_LINE = 160
# Upper bound on what one opcode can make the C unpickler allocate (a new dict, set
# entry, tuple, stack and memo slots), so a pickle's objects can be charged to the
# budget before it is unpickled. Argument payloads are charged at 4 bytes per byte
# (the widest str representation).
_BYTES_PER_OPCODE = 128
_BYTES_PER_PAYLOAD_BYTE = 4

# Opcode classes of the scan (``_KINDS[opcode]``); atoms push one value, POPn pop n
# values and push one, INTOn pop n values into the container below them.
(_ATOM, _PUT1, _PUT4, _GET1, _GET4, _LEN1, _LEN4, _LEN4S, _LEN8, _MARK, _FROM_MARK,
 _INTO_FROM_MARK, _POP1, _POP2, _POP3, _INTO1, _INTO2, _LINE, _GLOBAL, _INST, _POP,
 _POP_MARK, _DUP, _MEMOIZE, _PUT_LINE, _GET_LINE, _PROTO, _FRAME, _STOP, _REFUSED) = range(30)


def _opcode_tables() -> tuple[bytes, bytes]:
    """Build the scan's 256-entry class and argument-width tables.

    Refused (class ``_REFUSED``): sets (no state_dict holds one, and each costs 216
    bytes for one opcode byte), the extension registry (EXT*), out-of-band buffers and
    every byte that is not an opcode.
    """
    kinds = bytearray([_REFUSED]) * 256
    widths = bytearray(256)

    def add(codes: str, kind: int, width: int = 0) -> None:
        for code in codes:
            kinds[ord(code)], widths[ord(code)] = kind, width

    add("N\x88\x89)]}", _ATOM)  # NONE NEWTRUE NEWFALSE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT
    add("K", _ATOM, 1)  # BININT1
    add("M", _ATOM, 2)  # BININT2
    add("J", _ATOM, 4)  # BININT
    add("G", _ATOM, 8)  # BINFLOAT
    add("q", _PUT1)  # BINPUT
    add("r", _PUT4)  # LONG_BINPUT
    add("h", _GET1)  # BINGET
    add("j", _GET4)  # LONG_BINGET
    add("U\x8c\x8aC", _LEN1)  # SHORT_BINSTRING SHORT_BINUNICODE LONG1 SHORT_BINBYTES
    add("XB", _LEN4)  # BINUNICODE BINBYTES
    add("T\x8b", _LEN4S)  # BINSTRING LONG4 (signed lengths)
    add("\x8d\x8e\x96", _LEN8)  # BINUNICODE8 BINBYTES8 BYTEARRAY8
    add("(", _MARK)
    add("tldo", _FROM_MARK)  # TUPLE LIST DICT OBJ
    add("eu", _INTO_FROM_MARK)  # APPENDS SETITEMS
    add("\x85Q", _POP1)  # TUPLE1 BINPERSID
    add("\x86R\x81\x93", _POP2)  # TUPLE2 REDUCE NEWOBJ STACK_GLOBAL
    add("\x87\x92", _POP3)  # TUPLE3 NEWOBJ_EX
    add("ab", _INTO1)  # APPEND BUILD
    add("s", _INTO2)  # SETITEM
    add("ILFSVP", _LINE)  # INT LONG FLOAT STRING UNICODE PERSID
    add("c", _GLOBAL)
    add("i", _INST)
    add("0", _POP)
    add("1", _POP_MARK)
    add("2", _DUP)
    add("\x94", _MEMOIZE)
    add("p", _PUT_LINE)
    add("g", _GET_LINE)
    add("\x80", _PROTO)
    add("\x95", _FRAME)
    add(".", _STOP)
    return bytes(kinds), bytes(widths)


_KINDS, _WIDTHS = _opcode_tables()
U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
U64 = struct.Struct("<Q").unpack_from


class ScanError(Exception):
    """A pickle stream failed the pre-scan; the message says where and why."""


def _memo_index(line: bytes, pos: int) -> int:
    text = line.strip()
    if not text.isdigit() or len(text) > 10:
        raise ScanError(f"bad memo index {text[:20]!r} at byte {pos}")
    return int(text)


def scan_pickle(data: bytes, start: int) -> tuple[int, int]:
    """Check one pickle stream ``data[start:]`` up to its STOP before unpickling it.

    Replays the unpickler's stack, marks and memo on nesting depths only, so that
    nothing the C unpickler then does can allocate beyond what the stream's own bytes
    pay for:

    * memo indices (PUT, BINPUT, LONG_BINPUT) are at most the number of memo writes
      before them (the C unpickler grows its memo array to the largest index), and
      reads name a written index;
    * every length (FRAME, BINBYTES8, BINUNICODE8, LONG4...) fits in the bytes left;
    * values and MARKs nest at most ``_MAX_DEPTH`` deep (hashing a deeply nested
      tuple overflows the C stack: a 300 kB pickle crashes ``pickle.loads``);
    * STOP leaves exactly one value.

    Only streams the C unpickler would run need an exact replay: popping through a
    MARK is not checked here because the C unpickler refuses it at that same opcode,
    before anything else happens. Mutations (APPEND, SETITEM, BUILD) raise the depth
    of the container on the stack but not of its memo copies; that leaves only lists,
    dicts and objects under-counted, and hashing (the one unguarded recursion) stops
    at them, while tuples, immutable, are counted exactly.

    The loop runs once per opcode, so it is written for speed: common classes first,
    and a read past the end or an empty pop (``IndexError``) reported once, outside.

    Returns:
        ``(end, cost)``: the offset just past STOP and an upper bound on the bytes the
        unpickled objects can take.

    Raises:
        ScanError: The stream is malformed or hostile.
    """
    kinds, widths, u32 = _KINDS, _WIDTHS, U32
    end = len(data)
    stack: list[int] = []
    push, pop = stack.append, stack.pop
    marks: list[int] = []  # enclosing fences
    memo: dict[int, int] = {}
    fence = 0  # stack length at the innermost MARK
    puts = ops = payload = 0
    pos = start
    try:
        while True:
            op = data[pos]
            kind = kinds[op]
            ops += 1
            if kind == _ATOM:
                push(1)
                pos += 1 + widths[op]
            elif kind == _PUT4 or kind == _PUT1:
                index = u32(data, pos + 1)[0] if kind == _PUT4 else data[pos + 1]
                if index > puts:
                    raise ScanError(
                        f"memo index {index} at byte {pos} exceeds the {puts} memo writes "
                        "before it"
                    )
                memo[index] = stack[-1]
                puts += 1
                pos += 5 if kind == _PUT4 else 2
            elif kind == _GET1:
                push(memo[data[pos + 1]])
                pos += 2
            elif kind == _LEN4:
                length = u32(data, pos + 1)[0]
                pos += 5 + length
                if pos > end:
                    raise ScanError(f"argument length {length} runs past the end of the stream")
                payload += length
                push(1)
            elif kind == _MARK:
                if len(marks) >= _MAX_DEPTH:
                    raise ScanError(f"MARKs nested deeper than {_MAX_DEPTH} at byte {pos}")
                marks.append(fence)
                fence = len(stack)
                pos += 1
            elif kind == _FROM_MARK:
                depth = 1 + max(stack[fence:], default=0)
                del stack[fence:]
                fence = marks.pop()
                push(depth)
                pos += 1
                if depth > _MAX_DEPTH:
                    raise ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _POP2:
                depth = max(pop(), pop()) + 1
                push(depth)
                pos += 1
                if depth > _MAX_DEPTH:
                    raise ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _POP1:
                depth = stack[-1] = stack[-1] + 1
                pos += 1
                if depth > _MAX_DEPTH:
                    raise ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _INTO1 or kind == _INTO2:
                depth = (pop() if kind == _INTO1 else max(pop(), pop())) + 1
                if depth > stack[-1]:  # the container below now nests the value
                    stack[-1] = depth
                pos += 1
                if depth > _MAX_DEPTH:
                    raise ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _GET4:
                push(memo[u32(data, pos + 1)[0]])
                pos += 5
            elif kind == _LEN1 or kind == _LEN4S or kind == _LEN8:
                if kind == _LEN1:
                    length, pos = data[pos + 1], pos + 2
                elif kind == _LEN4S:
                    length, pos = _I32(data, pos + 1)[0], pos + 5
                else:
                    length, pos = U64(data, pos + 1)[0], pos + 9
                if length < 0 or length > end - pos:
                    raise ScanError(f"argument length {length} runs past the end of the stream")
                if length > _MAX_INT_BYTES and (op == 0x8A or op == 0x8B):  # LONG1, LONG4
                    raise ScanError(
                        f"an integer of {length} bytes at byte {pos - 5 if op == 0x8B else pos - 2}"
                        f" (at most {_MAX_INT_BYTES}): a checkpoint's sizes, strides and "
                        "offsets lie below 2**63"
                    )
                pos += length
                payload += length
                push(1)
            elif kind == _INTO_FROM_MARK:
                depth = 1 + max(stack[fence:], default=0)
                del stack[fence:]
                fence = marks.pop()
                if depth > stack[-1]:
                    stack[-1] = depth
                pos += 1
                if depth > _MAX_DEPTH:
                    raise ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _POP3:
                depth = max(pop(), pop(), pop()) + 1
                push(depth)
                pos += 1
                if depth > _MAX_DEPTH:
                    raise ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _LINE or kind == _GLOBAL or kind == _INST:
                line_end = data.index(b"\n", pos + 1)
                if (op == 0x49 or op == 0x4C) and line_end - pos > _MAX_INT_LINE:  # INT, LONG
                    raise ScanError(
                        f"an integer of {line_end - pos - 1} characters at byte {pos} (at most "
                        f"{_MAX_INT_LINE}): a checkpoint's sizes, strides and offsets lie "
                        "below 2**63"
                    )
                if kind != _LINE:
                    line_end = data.index(b"\n", line_end + 1)
                payload += line_end - pos
                pos = line_end + 1
                if kind == _INST:  # instantiates from the values above its MARK
                    del stack[fence:]
                    fence = marks.pop()
                push(1)
            elif kind == _POP:
                if len(stack) > fence:
                    pop()
                else:  # POP on an empty MARK pops the MARK, as the C unpickler does
                    fence = marks.pop()
                pos += 1
            elif kind == _POP_MARK:
                del stack[fence:]
                fence = marks.pop()
                pos += 1
            elif kind == _DUP:
                push(stack[-1])
                pos += 1
            elif kind == _MEMOIZE:
                memo[len(memo)] = stack[-1]
                puts += 1
                pos += 1
            elif kind == _PUT_LINE or kind == _GET_LINE:
                line_end = data.index(b"\n", pos + 1)
                index = _memo_index(data[pos + 1 : line_end], pos)
                if kind == _GET_LINE:
                    push(memo[index])
                elif index > puts:
                    raise ScanError(
                        f"memo index {index} at byte {pos} exceeds the {puts} memo writes "
                        "before it"
                    )
                else:
                    memo[index] = stack[-1]
                    puts += 1
                pos = line_end + 1
            elif kind == _PROTO:
                if data[pos + 1] > pickle.HIGHEST_PROTOCOL:
                    raise ScanError(f"unsupported pickle protocol {data[pos + 1]}")
                pos += 2
            elif kind == _FRAME:
                length = U64(data, pos + 1)[0]
                pos += 9
                if length > end - pos:
                    raise ScanError(f"frame length {length} runs past the end of the stream")
            elif kind == _STOP:
                if len(stack) != 1 or marks:
                    raise ScanError(f"STOP at byte {pos} leaves {len(stack)} values, not one")
                return pos + 1, ops * _BYTES_PER_OPCODE + payload * _BYTES_PER_PAYLOAD_BYTE
            else:
                raise ScanError(f"opcode {data[pos:pos + 1]!r} at byte {pos} is not allowed")
    except (IndexError, KeyError, ValueError, struct.error):
        # Reading past the end, popping an empty stack or MARK list, a memo read of an
        # unwritten index, a line argument without its newline.
        raise ScanError(
            f"truncated or inconsistent stream at byte {pos}: stack underflow, missing "
            "STOP, missing newline or unwritten memo index"
        ) from None
