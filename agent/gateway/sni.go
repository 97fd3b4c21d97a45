package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ClientHello errors. ErrNeedMore: the bytes so far are a valid prefix of a
// ClientHello; read more.
var (
	ErrNeedMore       = errors.New("incomplete ClientHello")
	ErrNotTLS         = errors.New("not a TLS handshake record")
	ErrBadClientHello = errors.New("malformed ClientHello")
)

// maxClientHello bounds the handshake message the gateway reads before it
// picks a listener (a ClientHello with post-quantum key shares is under
// 2 KiB; 64 KiB is the largest a client may legitimately send).
const maxClientHello = 64 << 10

// ParseClientHello returns the SNI host name ("" when the client sent
// none) of the ClientHello at the start of b, which may span several TLS
// records. It returns ErrNeedMore while b is a valid prefix.
func ParseClientHello(b []byte) (string, error) {
	msg, err := handshakeMessage(b)
	if err != nil {
		return "", err
	}
	return clientHelloSNI(msg)
}

// handshakeMessage reassembles the first handshake message from records.
func handshakeMessage(b []byte) ([]byte, error) {
	var msg []byte
	for {
		if len(b) < 5 {
			return nil, ErrNeedMore
		}
		if b[0] != 0x16 || b[1] != 3 {
			return nil, ErrNotTLS
		}
		n := int(binary.BigEndian.Uint16(b[3:5]))
		if n == 0 || n > 1<<14 {
			return nil, fmt.Errorf("%w: record length %d", ErrBadClientHello, n)
		}
		if len(b) < 5+n {
			return nil, ErrNeedMore
		}
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
		if len(msg) < 4 {
			continue
		}
		if msg[0] != 1 {
			return nil, fmt.Errorf("%w: handshake type %d", ErrBadClientHello, msg[0])
		}
		size := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if size > maxClientHello {
			return nil, fmt.Errorf("%w: %d bytes", ErrBadClientHello, size)
		}
		if len(msg) >= 4+size {
			return msg[4 : 4+size], nil
		}
	}
}

// reader reads big-endian fields; a short read sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int  { b := r.bytes(1); return int(at0(b)) }
func (r *reader) u16() int { b := r.bytes(2); return int(at0(b))<<8 | int(at1(b)) }

func at0(b []byte) byte {
	if len(b) > 0 {
		return b[0]
	}
	return 0
}

func at1(b []byte) byte {
	if len(b) > 1 {
		return b[1]
	}
	return 0
}

// clientHelloSNI walks a ClientHello body to its server_name extension.
func clientHelloSNI(body []byte) (string, error) {
	r := &reader{b: body}
	r.bytes(2 + 32)              // legacy_version, random
	r.bytes(r.u8())              // legacy_session_id
	r.bytes(r.u16())             // cipher_suites
	r.bytes(r.u8())              // legacy_compression_methods
	if !r.bad && len(r.b) == 0 { // no extensions (TLS 1.0 style)
		return "", nil
	}
	exts := &reader{b: r.bytes(r.u16())}
	if r.bad {
		return "", fmt.Errorf("%w: truncated", ErrBadClientHello)
	}
	for len(exts.b) > 0 && !exts.bad {
		typ, data := exts.u16(), exts.bytes(exts.u16())
		if typ == 0 && !exts.bad {
			return serverName(data)
		}
	}
	if exts.bad {
		return "", fmt.Errorf("%w: truncated extension", ErrBadClientHello)
	}
	return "", nil
}

// serverName reads the host_name entry of a server_name extension.
func serverName(data []byte) (string, error) {
	r := &reader{b: data}
	list := &reader{b: r.bytes(r.u16())}
	for len(list.b) > 0 && !list.bad {
		typ, name := list.u8(), list.bytes(list.u16())
		if typ == 0 && !list.bad {
			if len(name) == 0 || !printableASCII(name) {
				return "", fmt.Errorf("%w: server name %q", ErrBadClientHello, name)
			}
			return string(name), nil
		}
	}
	if r.bad || list.bad {
		return "", fmt.Errorf("%w: truncated server_name", ErrBadClientHello)
	}
	return "", nil
}

func printableASCII(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// PeekClientHello reads from r until it holds a whole ClientHello and
// returns its SNI and every byte read (to replay to the TLS server or the
// passthrough backend).
func PeekClientHello(r io.Reader) (sni string, peeked []byte, err error) {
	buf := make([]byte, 0, 2048)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		sni, err = ParseClientHello(buf)
		if !errors.Is(err, ErrNeedMore) {
			return sni, buf, err
		}
		if rerr != nil {
			return "", buf, fmt.Errorf("read ClientHello: %w", rerr)
		}
		if len(buf) > maxClientHello+4*(5+1<<14) {
			return "", buf, fmt.Errorf("%w: too long", ErrBadClientHello)
		}
	}
}
