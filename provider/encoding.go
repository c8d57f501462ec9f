package provider

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Loom does not ask upstreams to compress (it relays bodies as they come), but proxies and
// some OpenAI-compatible servers compress anyway. Such a body is decoded so Loom can meter
// it and send the client a body that matches its headers.

// ErrCorruptBody is in the error chain of a Read of a decoded body whose compressed bytes
// are not valid in their encoding (as opposed to a failed read of them).
var ErrCorruptBody = errors.New("provider: corrupt compressed body")

// DecodeBody returns body decoded as encoding (a Content-Encoding value) says: gzip and
// deflate (zlib-wrapped or raw, as servers send both) are decoded as they are read; ""
// and identity are body itself. For an encoding Loom cannot decode it returns body and
// false: the caller passes the bytes on labelled with the encoding. Closing the result
// closes body.
func DecodeBody(encoding string, body io.ReadCloser) (io.ReadCloser, bool) {
	var open func(io.Reader) (io.Reader, error)
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return body, true
	case "gzip", "x-gzip":
		open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	case "deflate":
		open = openDeflate
	default:
		return body, false
	}
	return &decoder{src: body, open: open, name: encoding}, true
}

// DecodeBytes decodes a whole body, up to limit decoded bytes; bytes it cannot decode are
// returned as they are, with false.
func DecodeBytes(encoding string, b []byte, limit int64) ([]byte, bool) {
	r, ok := DecodeBody(encoding, io.NopCloser(bytes.NewReader(b)))
	if !ok {
		return b, false
	}
	out, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return b, false
	}
	return out, true
}

// openDeflate reads HTTP's deflate: zlib-wrapped as the standard says, or raw deflate as
// some servers send it, told apart by the zlib header.
func openDeflate(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	if h, err := br.Peek(2); err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

// decoder opens its decompressor on the first Read, so a stream's headers are not held
// back waiting for the first compressed bytes.
type decoder struct {
	src  io.ReadCloser
	open func(io.Reader) (io.Reader, error)
	name string
	r    io.Reader
	err  error
}

func (d *decoder) Read(p []byte) (int, error) {
	if d.r == nil && d.err == nil {
		if d.r, d.err = d.open(d.src); d.err != nil {
			d.err = d.wrap(d.err)
		}
	}
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = d.wrap(err)
	}
	return n, err
}

func (d *decoder) wrap(err error) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, zlib.ErrHeader) ||
		errors.Is(err, zlib.ErrChecksum) || errors.As(err, &corrupt) {
		return fmt.Errorf("%w (%s): %w", ErrCorruptBody, d.name, err)
	}
	return fmt.Errorf("provider: decode %s body: %w", d.name, err)
}

func (d *decoder) Close() error { return d.src.Close() }
