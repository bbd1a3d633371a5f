"""An NSCA client: passive check results sent as ``send_nsca`` sends them (NSCA 2.9/2.10,
packet version 3; ``src/send_nsca.c`` and ``include/common.h`` of NagiosEnterprises/nsca).

The exchange, on one TCP connection:

1. the server sends its init packet: a 128-byte IV and a 32-bit timestamp (network order), 132 bytes;
2. the client sends one data packet per result: ``int16 version (3)``, 2 bytes of padding,
   ``uint32 crc32``, ``uint32 timestamp`` (the server's, echoed), ``int16 return code``, then
   NUL-terminated fields of fixed size: host name (64), service description (128; empty for a
   host result), plugin output (4096), and 2 bytes of padding: 4304 bytes. The CRC-32 (zlib's) is
   taken over the packet with its crc field zero; unused bytes are random, as ``send_nsca`` fills them;
3. the packet is encrypted, and the client closes its side; the server closes once it has read
   (and written to Nagios' command file) every packet.

NSCA has no acknowledgement: the client knows its packets arrived when the server closes the
connection after reading them all (its end of file), which is what ``send`` waits for. A server
that sends anything besides its init packet breaks the protocol: the send fails.

Encryption methods (``decryption_method`` of the server's ``nsca.cfg``): 0 none, 1 XOR (the IV,
then the password, XORed over each packet; obfuscation, not security) and 14 (RIJNDAEL-128 in
mcrypt's 8-bit CFB mode: AES with the password, NUL-padded or cut, as a 32-byte key, so AES-256,
the IV's first 16 bytes as IV, one cipher stream over all packets of a connection). Debian's
``nsca`` (built with libmcrypt) also offers 2 DES, 3 3DES, 4 CAST-128, 5 CAST-256, 6 xTEA,
7 3WAY, 8 BLOWFISH, 9 TWOFISH, 10 LOKI97, 11 RC2, 12 ARCFOUR, 15/16 RIJNDAEL-192/256 (not AES:
larger blocks), 19 WAKE, 20 SERPENT, 22 ENIGMA, 23 GOST, 24-26 SAFER: not supported here (most
are broken or exist only in libmcrypt).

Output longer than 4095 bytes is cut (at a character boundary) as ``send_nsca`` cuts it; host
names longer than 63 bytes and descriptions longer than 127 are refused (cutting them would
address another host or service). The server's ``escape_newlines`` (NSCA 2.10.1 and later)
turns newlines into ``\\n`` for Nagios, which gives them back as long output.
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ENCRYPTIONS", "INIT_PACKET_SIZE", "PACKET_SIZE", "NscaError", "NscaResult", "encode_packet",
           "send_results"]

IV_SIZE = 128
INIT_PACKET_SIZE = IV_SIZE + 4
MAX_HOSTNAME = 64
MAX_DESCRIPTION = 128
MAX_OUTPUT = 4096
_HEAD = struct.Struct("!hxxIIh")
PACKET_SIZE = _HEAD.size + MAX_HOSTNAME + MAX_DESCRIPTION + MAX_OUTPUT + 2  # 4304, the C struct's size
PACKET_VERSION = 3

#: name -> NSCA method number.
ENCRYPTIONS = {"none": 0, "xor": 1, "aes256": 14}


class NscaError(Exception):
    """A send that failed; the message names the server and what went wrong (never the password)."""


@dataclass(frozen=True, slots=True)
class NscaResult:
    """One passive result: ``service`` empty for a host result."""

    host: str
    service: str
    code: int
    output: str


def _field(text: str, size: int, what: str) -> bytes:
    data = text.encode("utf-8", "replace").replace(b"\x00", b"")
    if len(data) >= size:
        raise ValueError(f"{what} {text[:40]!r} is longer than NSCA's {size - 1} bytes")
    return data


def cut_output(text: str, limit: int = MAX_OUTPUT - 1) -> bytes:
    """``text`` as UTF-8 without NULs, cut to ``limit`` bytes at a character boundary."""
    data = text.encode("utf-8", "replace").replace(b"\x00", b"")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


def encode_packet(result: NscaResult, timestamp: int) -> bytes:
    """The plain (not yet encrypted) data packet of ``result``; ValueError for a name too long."""
    host = _field(result.host, MAX_HOSTNAME, "host name")
    service = _field(result.service, MAX_DESCRIPTION, "service description")
    output = cut_output(result.output)
    buf = bytearray(os.urandom(PACKET_SIZE))
    _HEAD.pack_into(buf, 0, PACKET_VERSION, 0, timestamp & 0xFFFFFFFF, result.code)
    o = _HEAD.size
    for data, size in ((host, MAX_HOSTNAME), (service, MAX_DESCRIPTION), (output, MAX_OUTPUT)):
        buf[o:o + len(data) + 1] = data + b"\x00"
        o += size
    struct.pack_into("!I", buf, 4, zlib.crc32(buf))
    return bytes(buf)


class _Cipher:
    """The encryption of one connection (the IV comes from the server's init packet)."""

    def __init__(self, method: int, password: bytes, iv: bytes) -> None:
        self.method = method
        self.iv = iv
        self.password = password.split(b"\x00", 1)[0]  # C's strlen
        self._aes = None
        if method == 14:
            from cryptography.hazmat.decrepit.ciphers.modes import CFB8
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

            key = self.password[:32].ljust(32, b"\x00")
            self._aes = Cipher(algorithms.AES(key), CFB8(iv[:16])).encryptor()
        elif method not in (0, 1):
            raise ValueError(f"NSCA encryption method {method} is not supported (0 none, 1 xor, 14 aes256)")

    def encrypt(self, packet: bytes) -> bytes:
        if self.method == 0:
            return packet
        if self._aes is not None:
            return bytes(self._aes.update(packet))
        n = len(packet)
        iv = (self.iv * (n // IV_SIZE + 1))[:n]
        out = int.from_bytes(packet, "big") ^ int.from_bytes(iv, "big")
        if self.password:
            pw = (self.password * (n // len(self.password) + 1))[:n]
            out ^= int.from_bytes(pw, "big")
        return out.to_bytes(n, "big")


async def send_results(host: str, port: int, results: Sequence[NscaResult], *, method: int = 0,
                       password: bytes = b"", timeout: float = 10.0) -> None:
    """Send ``results`` on one connection to the NSCA server at host:port and wait until it has
    read them all (its close), all within ``timeout`` seconds. NscaError says what failed."""
    where = f"NSCA server {host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            await _exchange(host, port, results, method, password, where)
    except TimeoutError:
        raise NscaError(f"{where}: no answer within {timeout:g} s") from None
    except OSError as e:
        raise NscaError(f"{where}: {e.strerror or type(e).__name__}") from None


async def _exchange(host: str, port: int, results: Sequence[NscaResult], method: int, password: bytes,
                    where: str) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=INIT_PACKET_SIZE * 2)
    try:
        try:
            init = await reader.readexactly(INIT_PACKET_SIZE)
        except asyncio.IncompleteReadError as e:
            raise NscaError(f"{where}: closed the connection after {len(e.partial)} of the "
                            f"{INIT_PACKET_SIZE} bytes of its init packet") from None
        iv, (timestamp,) = init[:IV_SIZE], struct.unpack("!I", init[IV_SIZE:])
        cipher = _Cipher(method, password, iv)
        for r in results:
            writer.write(cipher.encrypt(encode_packet(r, timestamp)))
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        extra = await reader.read(64)
        if extra:
            raise NscaError(f"{where}: sent {len(extra)}+ bytes besides its init packet (not an NSCA server?)")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
