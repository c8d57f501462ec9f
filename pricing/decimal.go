package pricing

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// microDigits is the number of fractional digits a price may have: prices are kept in
// micro-USD per million tokens.
const microDigits = 6

// parseMicros parses a non-negative decimal number in JSON number syntax (as held by a
// json.Number: digits, an optional fraction, an optional exponent) into millionths,
// exactly: "2.50" → 2_500_000, "1.25e-1" → 125_000. It rejects negative numbers, numbers
// with more than 6 significant fractional digits ("0.0000001") and numbers too large for an
// int64.
func parseMicros(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	if s[0] == '-' {
		return 0, fmt.Errorf("negative price %s", s)
	}
	mant, expText, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	if !allDigits(intPart) || (strings.Contains(mant, ".") && !allDigits(frac)) {
		return 0, fmt.Errorf("malformed number %q", s)
	}
	exp := 0
	if hasExp {
		neg := false
		switch {
		case strings.HasPrefix(expText, "-"):
			neg, expText = true, expText[1:]
		case strings.HasPrefix(expText, "+"):
			expText = expText[1:]
		}
		if !allDigits(expText) || len(expText) > 3 {
			return 0, fmt.Errorf("malformed exponent in %q", s)
		}
		for _, c := range expText {
			exp = exp*10 + int(c-'0')
		}
		if neg {
			exp = -exp
		}
	}
	// The value is digits × 10^-scale.
	digits := strings.TrimLeft(intPart+frac, "0")
	scale := len(frac) - exp
	for scale > microDigits && strings.HasSuffix(digits, "0") {
		digits = digits[:len(digits)-1]
		scale--
	}
	if digits == "" {
		return 0, nil
	}
	if scale > microDigits {
		return 0, fmt.Errorf("price %s has more than %d fractional digits", s, microDigits)
	}
	var v int64
	for _, c := range digits {
		d := int64(c - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, fmt.Errorf("price %s is too large", s)
		}
		v = v*10 + d
	}
	for range microDigits - scale {
		if v > math.MaxInt64/10 {
			return 0, fmt.Errorf("price %s is too large", s)
		}
		v *= 10
	}
	return v, nil
}

// allDigits reports whether s is a non-empty run of ASCII digits.
func allDigits(s string) bool { return s != "" && isDigits(s) }
