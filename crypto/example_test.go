package crypto_test

import (
	"fmt"

	loomcrypto "github.com/loom-gateway/loom/crypto"
)

func ExampleParseKeyring() {
	// LOOM_MASTER_KEY after one rotation: version 2 is current, version 1 still opens old rows.
	const spec = "2:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	keys, err := loomcrypto.ParseKeyring(spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	sealed, version, err := keys.Seal("tenant-a", "provider:openai", []byte("sk-upstream-key"))
	if err != nil {
		fmt.Println(err)
		return
	}
	plaintext, err := keys.Open("tenant-a", "provider:openai", version, sealed)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = keys.Open("tenant-b", "provider:openai", version, sealed)
	fmt.Println(keys)
	fmt.Println(version, string(plaintext))
	fmt.Println(err != nil)
	// Output:
	// crypto.Keyring{current: 2, versions: [1 2]}
	// 2 sk-upstream-key
	// true
}
