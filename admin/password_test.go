package admin

import (
	"strings"
	"testing"
)

var testParams = Params{Memory: 64, Time: 1, Threads: 1}

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("a long enough password", testParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Count(h, "$") != 5 {
		t.Fatalf("not a PHC string: %s", h)
	}
	h2, _ := HashPassword("a long enough password", testParams)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		name, password string
		params         Params
		ok, rehash     bool
	}{
		{"right", "a long enough password", testParams, true, false},
		{"wrong", "a long enough passwore", testParams, false, false},
		{"empty", "", testParams, false, false},
		{"raised memory", "a long enough password", Params{Memory: 128, Time: 1, Threads: 1}, true, true},
		{"raised time", "a long enough password", Params{Memory: 64, Time: 2, Threads: 1}, true, true},
		{"raised but wrong", "nope", Params{Memory: 128, Time: 2, Threads: 1}, false, false},
		{"lowered", "a long enough password", Params{Memory: 32, Time: 1, Threads: 1}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, rehash, err := VerifyPassword(tc.password, h, tc.params)
			if err != nil || ok != tc.ok || rehash != tc.rehash {
				t.Errorf("ok %v rehash %v err %v, want %v %v", ok, rehash, err, tc.ok, tc.rehash)
			}
		})
	}
}

func TestPasswordHashCorrupt(t *testing.T) {
	for _, h := range []string{
		"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",        // below argon2's minimum: would panic
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", // a stored denial of service
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$",
	} {
		if ok, _, err := VerifyPassword("x", h, testParams); ok || err == nil {
			t.Errorf("%q: ok %v err %v, want an error", h, ok, err)
		}
	}
}

func TestCheckPassword(t *testing.T) {
	for _, tc := range []struct {
		pw string
		ok bool
	}{
		{"twelve bytes", true}, {"eleven byte", false}, {strings.Repeat("x", MaxPasswordLen), true},
		{strings.Repeat("x", MaxPasswordLen+1), false}, {"with a NUL \x00 inside", false}, {"not utf-8 \xff\xfe..", false},
		{"ünïcødé pässwörd", true},
	} {
		if err := checkPassword(tc.pw); (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.pw, err)
		}
	}
}

func TestTokenShape(t *testing.T) {
	tok, hash, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := tokenHash(tok); !ok || got != hash {
		t.Fatal("a new token does not parse to its hash")
	}
	for _, bad := range []string{"", TokenPrefix, tok[:len(tok)-1], tok + "A", "x" + tok[1:], strings.Replace(tok, tok[10:11], "=", 1),
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."} {
		if _, ok := tokenHash(bad); ok {
			t.Errorf("%q parsed as a token", bad)
		}
	}
}
