package box

import (
	"errors"
	"fmt"
)

var (
	// ErrEmptyKey: a key of length zero cannot be written, since on the
	// wire a zero length ends the box.
	ErrEmptyKey = errors.New("box: empty key")
	// ErrBoxTooLarge: a box on the stream is larger than the decoder's
	// limit. The stream cannot be resynchronised after it.
	ErrBoxTooLarge = errors.New("box: box exceeds size limit")
	// ErrDuplicateKey: a key appears twice in one box on the stream.
	ErrDuplicateKey = errors.New("box: duplicate key")
	// ErrTooManyFields: a box on the stream has more fields than the
	// decoder's limit (Decoder.SetMaxFields). The stream cannot be
	// resynchronised after it.
	ErrTooManyFields = errors.New("box: too many fields")
)

// TooManyFieldsError reports a box with more fields than Limit; it
// matches ErrTooManyFields.
type TooManyFieldsError struct{ Limit int }

func (e *TooManyFieldsError) Error() string {
	return fmt.Sprintf("box: too many fields: more than %d in one box", e.Limit)
}

func (e *TooManyFieldsError) Is(target error) bool { return target == ErrTooManyFields }

// TooLongError reports a key longer than MaxKeyLength or a value longer than
// MaxValueLength, as Twisted's amp.TooLong does.
type TooLongError struct {
	Key   bool   // the key is too long (else a value)
	Local bool   // found while encoding (else sent by the peer)
	Name  string // the key (possibly truncated) or, for a value, its key
	Len   int    // the offending length
}

func (e *TooLongError) Error() string {
	what, limit := "value", MaxValueLength
	if e.Key {
		what, limit = "key", MaxKeyLength
	}
	side := "received"
	if e.Local {
		side = "to send"
	}
	return fmt.Sprintf("box: %s %s %q is %d bytes, limit %d", side, what, e.Name, e.Len, limit)
}

// DuplicateKeyError names the repeated key; it matches ErrDuplicateKey.
type DuplicateKeyError struct{ Key string }

func (e *DuplicateKeyError) Error() string {
	return fmt.Sprintf("box: duplicate key %q", e.Key)
}

func (e *DuplicateKeyError) Is(target error) bool { return target == ErrDuplicateKey }

// truncate keeps error messages short on hostile input.
func truncate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
