package provider

import "errors"

// Loom reads only a few top-level fields of the bodies it relays (model, stream, usage).
// Decoding whole bodies into maps and encoding them again would cost allocations per
// request and per stream chunk, and could reorder or reformat what the client and the
// upstream sent; instead, members walks the top level of a JSON object and reports where
// each value lies, so callers decode only the values they need and splice bytes in place.

var (
	errNotObject = errors.New("not a JSON object")
	errNotArray  = errors.New("not a JSON array")
)

// members calls fn with each top-level member of the JSON object b: the key as written
// between the quotes (escapes are not decoded) and the value's byte range b[start:end].
// fn returns false to stop early. b must be valid JSON (check with json.Valid first where
// it comes from outside); members does not validate.
func members(b []byte, fn func(key []byte, start, end int) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return errNotObject
		}
		switch b[i] {
		case '}':
			return nil
		case ',':
			i++
			continue
		case '"':
		default:
			return errNotObject
		}
		kEnd := skipString(b, i)
		key := b[i+1 : kEnd-1]
		i = skipSpace(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return errNotObject
		}
		start := skipSpace(b, i+1)
		end := skipValue(b, start)
		if !fn(key, start, end) {
			return nil
		}
		i = end
	}
}

// elements calls fn with the byte range b[start:end] of each element of the JSON array b,
// in order; fn returns false to stop early. Like members, it does not validate.
func elements(b []byte, fn func(start, end int) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return errNotArray
	}
	for i++; ; {
		i = skipSpace(b, i)
		if i >= len(b) {
			return errNotArray
		}
		switch b[i] {
		case ']':
			return nil
		case ',':
			i++
			continue
		}
		end := skipValue(b, i)
		if end <= i { // a stray '}': not an element
			return errNotArray
		}
		if !fn(i, end) {
			return nil
		}
		i = end
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index just past the string that starts at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value that starts at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				return i
			}
		}
		return len(b)
	}
}

// isEmptyArray reports whether v is "[]" with any inner white space.
func isEmptyArray(v []byte) bool {
	return len(v) >= 2 && v[0] == '[' && skipSpace(v, 1) == len(v)-1
}
