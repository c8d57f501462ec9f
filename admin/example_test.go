package admin_test

import (
	"fmt"

	"github.com/loom-gateway/loom/admin"
)

// A password hash carries its parameters, so raising them later marks old hashes for
// rehashing at the next sign-in.
func ExampleVerifyPassword() {
	old := admin.Params{Memory: 64, Time: 1, Threads: 1}
	hash, err := admin.HashPassword("correct horse battery staple", old)
	if err != nil {
		panic(err)
	}
	ok, rehash, _ := admin.VerifyPassword("correct horse battery staple", hash, admin.Params{Memory: 128, Time: 2, Threads: 1})
	fmt.Println(ok, rehash)
	ok, _, _ = admin.VerifyPassword("wrong", hash, old)
	fmt.Println(ok)
	// Output:
	// true true
	// false
}
