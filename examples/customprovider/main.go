// Command customprovider shows how to plug your own upstream logic into Loom: a
// provider.Provider that sends each request to a primary provider and, when the primary
// cannot be reached or answers 429 or 5xx, to a fallback.
//
//	go run ./examples/customprovider
//
// It serves a gateway on a primary that is down and a mock fallback, sends one request and
// prints the answer.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
)

// Fallback is a provider.Provider over two others. The contract it honours: answers are in
// the OpenAI wire format, an upstream's error answer is a *provider.UpstreamError, and the
// call ends when ctx ends.
type Fallback struct {
	Primary, Secondary provider.Provider
}

var _ provider.Provider = Fallback{}

// Chat implements provider.Provider.
func (f Fallback) Chat(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	resp, err := f.Primary.Chat(ctx, req)
	var ue *provider.UpstreamError
	switch {
	case err == nil, ctx.Err() != nil:
		return resp, err
	case errors.As(err, &ue) && ue.StatusCode != http.StatusTooManyRequests && ue.StatusCode < 500:
		return nil, err // the request itself is wrong: another upstream would refuse it too
	}
	return f.Secondary.Chat(ctx, req)
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "loom-customprovider")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		return err
	}
	down := provider.NewOpenAI(provider.OpenAIConfig{BaseURL: "http://127.0.0.1:1/v1"}) // nothing listens there
	gw, err := loom.New(loom.Config{
		Store:  tenancy.NewSQLiteStore(db),
		Routes: []loom.Route{{Name: "ha", Provider: Fallback{Primary: down, Secondary: provider.NewMock(provider.MockConfig{})}, Models: []string{"gpt-4o-mini"}}},
	})
	if err != nil {
		return err
	}
	defer gw.Shutdown(ctx)
	tenant, err := gw.Admin().CreateTenant(ctx, "demo")
	if err != nil {
		return err
	}
	key, _, err := gw.Admin().CreateKey(ctx, tenant.ID, "demo")
	if err != nil {
		return err
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	fmt.Fprintf(stdout, "%s\n%s\n", resp.Status, body)
	return err
}
