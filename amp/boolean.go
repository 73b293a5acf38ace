package amp

// Twisted's Boolean argument compares the wire bytes with b"True" and
// b"False" exactly; there is no case folding or whitespace tolerance.

// AppendBool appends "True" or "False", the only spellings Twisted reads.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, "True"...)
	}
	return append(dst, "False"...)
}

// ParseBool accepts exactly "True" and "False", as Twisted does; anything
// else (including "true", "1" or padded forms) wraps ErrInvalidValue.
func ParseBool(b []byte) (bool, error) {
	switch string(b) {
	case "True":
		return true, nil
	case "False":
		return false, nil
	}
	return false, valError(ErrInvalidValue, "Boolean", b)
}
