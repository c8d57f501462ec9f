package loom_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/loom-gateway/loom"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// ExampleNew mounts a gateway in an ordinary http.Server with an embedded store, the mock
// provider and traces written to SQLite.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "loom-example")
	defer os.RemoveAll(dir)

	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		log.Fatal(err)
	}
	master, _ := loomcrypto.GenerateMasterKey()
	keyring, _ := loomcrypto.ParseKeyring(master)
	gw, err := loom.New(loom.Config{
		Store:   tenancy.NewSQLiteStore(db),
		Keyring: keyring,
		Routes:  []loom.Route{{Name: "mock", Provider: provider.NewMock(provider.MockConfig{}), Models: []string{"mock-1"}}},
		Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{tracing.NewSQLiteSink(db)}, SpoolDir: filepath.Join(dir, "spool")},
	})
	if err != nil {
		log.Fatal(err)
	}
	tenant, _ := gw.Admin().CreateTenant(ctx, "acme")
	key, _, _ := gw.Admin().CreateKey(ctx, tenant.ID, "example")

	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	srv := httptest.NewServer(mux)

	req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock-1","messages":[{"role":"user","content":"hello"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status)

	srv.Close()      // stop serving first,
	gw.Shutdown(ctx) // then flush every trace.
	var n int
	db.QueryRow("SELECT count(*) FROM traces").Scan(&n)
	fmt.Println("traces:", n)
	// Output:
	// 200 OK
	// traces: 1
}
