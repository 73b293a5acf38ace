package box

import (
	"fmt"
	"io"
)

const (
	// DefaultMaxBoxSize bounds the memory one box on a hostile stream can
	// make a Decoder hold: 16 MiB, length prefixes included.
	DefaultMaxBoxSize = 16 << 20
	// DefaultMaxFields bounds the fields of one box. Twisted's commands
	// carry a handful of arguments (a list is one value, AmpList included),
	// so 1024 leaves room for any real protocol, while a box of millions of
	// tiny fields, which costs seconds of CPU and a field index and key map
	// ten times its size, is refused after a few kilobytes.
	DefaultMaxFields = 1024
	// ReadAhead is the size up to which the buffer grows for a busy stream
	// of small boxes; beyond it, the buffer grows only for a box that does
	// not fit, and shrinks back once that box has been consumed.
	ReadAhead = maxReadAhead
	// The buffer starts small, so that idle connections cost little, and
	// doubles while reads fill it (a busy stream) up to maxReadAhead.
	defaultBufSize = 1 << 10
	maxReadAhead   = 64 << 10
	// Past this many fields, duplicate keys are found with a map rather
	// than by scanning.
	linearDupLimit = 16
	// After a box of more fields than these, the field index of the box
	// Next decoded into and the decoder's key map are dropped rather than
	// kept for the next box: a large box leaves no large index behind.
	keepFields = 256
	keepSeen   = 64
)

// Decoder reads boxes from a stream. It reads ahead into its own buffer;
// Buffered returns what it holds beyond the last box, so that a connection
// can be handed to another protocol without losing bytes.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	r          io.Reader
	buf        []byte
	start, end int   // unread bytes are buf[start:end]
	max        int   // box size limit
	maxFields  int   // fields per box limit
	err        error // sticky: once the stream is bad, it stays bad
	scratch    Box
	seen       map[string]struct{}
	full       bool // the last read filled the buffer
	grow       func(delta int) error
}

// NewDecoder returns a Decoder reading from r with the default limits.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r, max: DefaultMaxBoxSize, maxFields: DefaultMaxFields}
}

// SetMaxFields sets the most fields a box may have; n <= 0 restores
// DefaultMaxFields. A box with more is a *TooManyFieldsError, which, like
// every malformed stream, is sticky.
func (d *Decoder) SetMaxFields(n int) {
	if n <= 0 {
		n = DefaultMaxFields
	}
	d.maxFields = n
}

// SetGrowHook makes the decoder report every change in the size of its
// buffer to f, so that the owner of many decoders can account for their
// memory. f is called with delta > 0 before the buffer grows by delta
// bytes (its first allocation included): an error from f refuses the
// growth, and Next returns that error, sticky, as for a malformed stream.
// It is called with delta < 0 after the buffer has shrunk (after a box
// larger than ReadAhead has been consumed, or when the decoder stops on an
// error); its error is then ignored. The sum of the deltas is the size of
// the buffer. f runs on the goroutine calling Next or Decode; nil (the
// default) reports nothing.
func (d *Decoder) SetGrowHook(f func(delta int) error) { d.grow = f }

// SetMaxBoxSize sets the largest box accepted, in wire bytes; n <= 0
// restores DefaultMaxBoxSize.
func (d *Decoder) SetMaxBoxSize(n int) {
	if n <= 0 {
		n = DefaultMaxBoxSize
	}
	d.max = n
}

// Buffered returns the bytes read from the stream but not yet decoded. The
// slice aliases the decoder's buffer until its next call.
func (d *Decoder) Buffered() []byte { return d.buf[d.start:d.end] }

// Reset makes the decoder read from r, discarding buffered bytes and any
// error. Take Buffered first if those bytes matter.
func (d *Decoder) Reset(r io.Reader) {
	d.r, d.start, d.end, d.err = r, 0, 0, nil
}

// Decode reads the next box into b, which owns its bytes afterwards.
// It returns io.EOF when the stream ends cleanly between boxes.
func (d *Decoder) Decode(b *Box) error {
	if err := d.Next(&d.scratch); err != nil {
		b.Reset()
		return err
	}
	b.CopyFrom(&d.scratch)
	d.scratch.Reset()
	return nil
}

// Next reads the next box into b without copying: b aliases the decoder's
// buffer and is valid only until the decoder's next call. It returns io.EOF
// when the stream ends cleanly between boxes, an error wrapping
// io.ErrUnexpectedEOF when it ends inside one, and *TooLongError,
// ErrBoxTooLarge, *DuplicateKeyError or *TooManyFieldsError for a
// malformed stream. Errors other than a clean io.EOF are sticky.
//
// Memory a large box made the decoder (and b) grow is released here, at
// the start of the next call, once that box is no longer valid: the
// buffer shrinks back to ReadAhead when what it holds beyond the last box
// fits in half of it, and a field index or key map grown past a few
// hundred fields is dropped.
func (d *Decoder) Next(b *Box) error {
	b.Reset()
	if cap(b.fields) > keepFields {
		b.fields = nil
	}
	if len(d.buf) > maxReadAhead || len(d.seen) > keepSeen {
		d.release()
	}
	if d.err != nil && d.start == d.end {
		return d.err
	}
	pos := d.start // scan position: fields before it are complete
	for {
		avail := d.end - pos
		if avail < 2 {
			if err := d.fill(&pos, 2); err != nil {
				return err
			}
			continue
		}
		kl := int(d.buf[pos])<<8 | int(d.buf[pos+1])
		if kl == 0 {
			pos += 2
			break
		}
		if kl > MaxKeyLength {
			return d.fail(&TooLongError{Key: true, Len: kl})
		}
		if avail < 4+kl {
			if err := d.fill(&pos, 4+kl); err != nil {
				return err
			}
			continue
		}
		vl := int(d.buf[pos+2+kl])<<8 | int(d.buf[pos+3+kl])
		n := 4 + kl + vl
		if pos+n+2-d.start > d.max {
			return d.fail(fmt.Errorf("%w: more than %d bytes", ErrBoxTooLarge, d.max))
		}
		if avail < n {
			if err := d.fill(&pos, n); err != nil {
				return err
			}
			continue
		}
		if len(b.fields) == d.maxFields {
			return d.fail(&TooManyFieldsError{Limit: d.maxFields})
		}
		rel := uint32(pos - d.start)
		f := span{k: rel + 2, kl: uint32(kl), v: rel + 4 + uint32(kl), vl: uint32(vl)}
		if err := d.checkDup(b, f); err != nil {
			return d.fail(err)
		}
		b.fields = append(b.fields, f)
		pos += n
	}
	b.data = d.buf[d.start:pos:pos]
	b.alias = true
	if pos == d.end {
		d.start, d.end = 0, 0
	} else {
		d.start = pos
	}
	return nil
}

func (d *Decoder) key(f span) []byte {
	return d.buf[d.start+int(f.k) : d.start+int(f.k+f.kl)]
}

func (d *Decoder) checkDup(b *Box, f span) error {
	k := d.key(f)
	n := len(b.fields)
	if n < linearDupLimit {
		for _, g := range b.fields {
			if g.kl == f.kl && string(d.key(g)) == string(k) {
				return &DuplicateKeyError{Key: truncate(k)}
			}
		}
		return nil
	}
	if n == linearDupLimit {
		if d.seen == nil {
			d.seen = make(map[string]struct{})
		}
		clear(d.seen)
		for _, g := range b.fields {
			d.seen[string(d.key(g))] = struct{}{}
		}
	}
	if _, dup := d.seen[string(k)]; dup {
		return &DuplicateKeyError{Key: truncate(k)}
	}
	d.seen[string(k)] = struct{}{}
	return nil
}

// fail makes err sticky and lets the buffer go: nothing in it will be
// decoded any more.
func (d *Decoder) fail(err error) error {
	d.err = err
	d.start, d.end = 0, 0
	d.seen = nil
	d.dropBuffer()
	return err
}

// release gives back what a large box made the decoder grow, once that box
// is no longer valid (at the start of Next).
func (d *Decoder) release() {
	if len(d.seen) > keepSeen {
		d.seen = nil
	}
	unread := d.end - d.start
	if len(d.buf) <= maxReadAhead || unread > maxReadAhead/2 {
		return
	}
	if unread == 0 {
		d.dropBuffer()
		return
	}
	old := len(d.buf)
	nb := make([]byte, maxReadAhead)
	d.end = copy(nb, d.buf[d.start:d.end])
	d.start, d.buf, d.full = 0, nb, false
	d.report(maxReadAhead - old)
}

// dropBuffer frees the buffer, which holds no unread byte; the next read
// starts again with a small one.
func (d *Decoder) dropBuffer() {
	if old := len(d.buf); old > 0 {
		d.buf, d.start, d.end, d.full = nil, 0, 0, false
		d.report(-old)
	}
}

// report tells the grow hook that the buffer shrank.
func (d *Decoder) report(delta int) {
	if d.grow != nil && delta != 0 {
		d.grow(delta)
	}
}

// resize replaces the buffer by one of size bytes holding the same bytes,
// once the grow hook has agreed.
func (d *Decoder) resize(size int) error {
	if d.grow != nil {
		if err := d.grow(size - len(d.buf)); err != nil {
			return d.fail(err)
		}
	}
	nb := make([]byte, size)
	copy(nb, d.buf[:d.end])
	d.buf = nb
	return nil
}

// fill reads until need bytes are available from *pos, compacting or
// growing the buffer (never past the box limit plus one read) as needed.
func (d *Decoder) fill(pos *int, need int) error {
	if d.err != nil {
		return d.eofErr(*pos)
	}
	if d.buf == nil {
		if err := d.resize(defaultBufSize); err != nil {
			return err
		}
	}
	boxSoFar := *pos - d.start
	if *pos+need > len(d.buf) {
		if d.start > 0 {
			copy(d.buf, d.buf[d.start:d.end])
			*pos -= d.start
			d.end -= d.start
			d.start = 0
		}
		if *pos+need > len(d.buf) {
			size := 2 * len(d.buf)
			for size < boxSoFar+need {
				size *= 2
			}
			if limit := d.max + defaultBufSize; size > limit {
				size = max(limit, boxSoFar+need)
			}
			if err := d.resize(size); err != nil {
				return err
			}
		}
	}
	if d.full && len(d.buf) < maxReadAhead && d.start == 0 && *pos+need <= len(d.buf) {
		// The last read filled the buffer: more is probably waiting.
		if err := d.resize(2 * len(d.buf)); err != nil {
			return err
		}
	}
	n, err := d.r.Read(d.buf[d.end:])
	d.full = d.end+n == len(d.buf)
	d.end += n
	if err != nil {
		d.err = err
		if n == 0 {
			return d.eofErr(*pos)
		}
	}
	if n == 0 && err == nil {
		return nil // io.Reader allows it; try again
	}
	return nil
}

// eofErr turns the sticky read error into what Next reports: a clean EOF
// only when no byte of a box has been read.
func (d *Decoder) eofErr(pos int) error {
	err := d.err
	if err == io.EOF && d.start == d.end && pos == d.start {
		// A clean end: the buffer is kept for a Reset, unless a large box
		// left it large.
		if len(d.buf) > maxReadAhead {
			d.dropBuffer()
		}
		return err
	}
	if err == io.EOF {
		err = fmt.Errorf("box: stream ended inside a box (%d bytes): %w", d.end-d.start, io.ErrUnexpectedEOF)
		d.err = err
	}
	d.start, d.end = 0, 0
	d.dropBuffer() // nothing more will be decoded from this stream
	return err
}
