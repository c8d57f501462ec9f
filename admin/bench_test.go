package admin

import (
	"context"
	"errors"
	"testing"

	"github.com/loom-gateway/loom/migrations"
)

// BenchmarkLogin compares a failed sign-in of a known username with one of an unknown
// username, at the default argon2id cost over SQLite: they should cost the same within
// noise (each verifies one hash and records one failure).
//
//	go test -run '^$' -bench Login -benchtime 40x -count 5 ./admin/
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	u, err := NewUsers(UsersOptions{Store: newStore(b, migrations.SQLite), MaxFailures: 1 << 30, MaxAddrFailures: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := u.CreateUser(ctx, "known", "the real password"); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"known", "unknown"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := u.Login(ctx, name, "a wrong password", "bench"); !errors.Is(err, ErrBadCredentials) {
					b.Fatal(err)
				}
			}
		})
	}
}
