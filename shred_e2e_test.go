package loom_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/ledger"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/provider"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
	"github.com/loom-gateway/loom/tracing"
)

// shredEnv is the standalone server's wiring on one database: tenancy store with the trace
// delete step, trace sink with the ledger, analytics reads.
type shredEnv struct {
	dialect string
	db      *sql.DB
	store   interface {
		tenancy.Store
		loomcrypto.DataKeyRewrapper
	}
	sink    func() tracing.Sink
	reads   analytics.Store
	routes  []loom.Route
	dir     string
	gw      *loom.Gateway
	srv     *httptest.Server
	started int
}

func newShredEnv(t *testing.T, dialect string) *shredEnv {
	t.Helper()
	ctx := context.Background()
	up := newTraceUpstream(t)
	e := &shredEnv{dialect: dialect, dir: t.TempDir(), routes: []loom.Route{{Name: "openai",
		Provider: provider.NewOpenAI(provider.OpenAIConfig{BaseURL: up.URL + "/v1", APIKey: "sk-upstream"}),
		Models:   []string{"gpt-4o"}}}}
	if dialect == migrations.Postgres {
		pool, _ := newPGPool(t)
		e.db = stdlib.OpenDBFromPool(pool)
		e.store = tenancy.NewPostgresStore(pool).WithDeleteSteps(func(ctx context.Context, tx pgx.Tx, id string) error {
			return ledger.RecordTenantDeletionPostgres(ctx, tx, id, time.Now())
		}, tracing.DeleteTenantTracesPostgres)
		e.sink = func() tracing.Sink {
			s, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: []tracing.PostgresTxStep{ledger.AppendPostgres}})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		e.reads = analytics.NewPostgresStore(pool)
	} else {
		db, err := sqlitedb.Open(ctx, filepath.Join(e.dir, "loom.db"))
		if err != nil {
			t.Fatal(err)
		}
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			t.Fatal(err)
		}
		e.db = db
		e.store = tenancy.NewSQLiteStore(db).WithDeleteSteps(func(ctx context.Context, tx *sql.Tx, id string) error {
			return ledger.RecordTenantDeletionSQLite(ctx, tx, id, time.Now())
		}, tracing.DeleteTenantTracesSQLite)
		e.sink = func() tracing.Sink { return tracing.NewSQLiteSink(db, ledger.AppendSQLite) }
		e.reads = analytics.NewSQLiteStore(db)
	}
	t.Cleanup(func() { e.stop(t); e.db.Close() })
	return e
}

// start (re)starts the gateway with keyring, a fresh spool and sink.
func (e *shredEnv) start(t *testing.T, keyring *loomcrypto.Keyring) {
	t.Helper()
	e.stop(t)
	e.started++
	gw, err := loom.New(loom.Config{Store: e.store, Routes: e.routes, Keyring: keyring, Analytics: e.reads,
		Tracing: tracing.PipelineConfig{Sinks: []tracing.Sink{e.sink()}, SpoolDir: filepath.Join(e.dir, fmt.Sprint("spool", e.started))}})
	if err != nil {
		t.Fatal(err)
	}
	e.gw, e.srv = gw, httptest.NewServer(gw)
}

func (e *shredEnv) stop(t *testing.T) {
	t.Helper()
	if e.gw == nil {
		return
	}
	e.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	e.gw = nil
}

// chat sends one completion with key and returns its trace id, flushed to the database.
func (e *shredEnv) chat(t *testing.T, key, text string) string {
	t.Helper()
	ctx := context.Background()
	c := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	var hr *http.Response
	if _, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}}, option.WithResponseInto(&hr)); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	return hr.Header.Get("X-Request-Id")
}

// detail is GET /v1/traces/{id} with key.
func (e *shredEnv) detail(t *testing.T, key, id string) (int, analytics.Detail) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/traces/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d analytics.Detail
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, d
}

// tenantRows counts, in every table with a tenant_id column (and tenants by id), the rows
// of the tenant.
func (e *shredEnv) tenantRows(t *testing.T, tenantID string) map[string]int {
	t.Helper()
	q := `SELECT table_name FROM information_schema.columns
	      WHERE column_name = 'tenant_id' AND table_schema = current_schema()
	        AND table_name IN (SELECT table_name FROM information_schema.tables
	                           WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
	        AND table_name NOT LIKE 'traces\_y%'`
	if e.dialect == migrations.SQLite {
		q = `SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c WHERE m.type = 'table' AND c.name = 'tenant_id'`
	}
	rows, err := e.db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	sort.Strings(tables)
	out := map[string]int{}
	count := func(table, col string) {
		var n int
		if err := e.db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s = $1`, table, col), tenantID).Scan(&n); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if n > 0 {
			out[table] = n
		}
	}
	for _, table := range tables {
		count(table, "tenant_id")
	}
	count("tenants", "id")
	return out
}

type copiedBody struct {
	traceID, part string
	version       int
	sealed        []byte
}

// copyCiphertexts reads the tenant's sealed bodies straight from the table, as a backup
// of the traces would hold them.
func (e *shredEnv) copyCiphertexts(t *testing.T, tenantID string) []copiedBody {
	t.Helper()
	rows, err := e.db.Query(`SELECT CAST(id AS TEXT), key_version, request_sealed, response_sealed FROM traces WHERE tenant_id = $1`, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []copiedBody
	for rows.Next() {
		var id string
		var v int
		var req, resp []byte
		if err := rows.Scan(&id, &v, &req, &resp); err != nil {
			t.Fatal(err)
		}
		out = append(out, copiedBody{id, tracing.BodyRequest, v, req}, copiedBody{id, tracing.BodyResponse, v, resp})
	}
	return out
}

func TestCryptoShredding(t *testing.T) {
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) { testCryptoShredding(t, newShredEnv(t, dialect)) })
	}
}

func testCryptoShredding(t *testing.T, e *shredEnv) {
	ctx := context.Background()
	v1 := testKeyring(t, 1, 1)
	v21 := testKeyring(t, 2, 1, 2)
	v2 := testKeyring(t, 2, 2)

	// 1. Before envelope encryption: bodies sealed with keys derived from master 1.
	e.start(t, v1)
	gone, _ := e.gw.Admin().CreateTenant(ctx, "gone")
	kept, _ := e.gw.Admin().CreateTenant(ctx, "kept")
	goneKey, _, err := e.gw.Admin().CreateKey(ctx, gone.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	keptKey, _, err := e.gw.Admin().CreateKey(ctx, kept.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	traces := map[string][]string{} // tenant id -> trace ids, oldest first
	for _, tn := range []struct{ id, key string }{{gone.ID, goneKey}, {kept.ID, keptKey}} {
		traces[tn.id] = append(traces[tn.id], e.chat(t, tn.key, "derived era of "+tn.id))
	}

	// 2. Envelope encryption, data keys wrapped by master 1.
	e.start(t, v1.WithDataKeys(e.store))
	if err := e.gw.Admin().PutProviderConfig(ctx, tenancy.ProviderConfig{TenantID: gone.ID, Name: "mine", Kind: "openai", BaseURL: "http://127.0.0.1:1/v1"}, "sk-gone-upstream"); err != nil {
		t.Fatal(err)
	}
	for _, tn := range []struct{ id, key string }{{gone.ID, goneKey}, {kept.ID, keptKey}} {
		traces[tn.id] = append(traces[tn.id], e.chat(t, tn.key, "envelope era of "+tn.id))
	}

	// 3. Rotation to master 2: adopt the derived keys, rewrap; then master 1 is removed.
	rot := v21.WithDataKeys(e.store)
	if n, err := rot.AdoptDerivedKeys(ctx, e.store, []string{gone.ID, kept.ID}); err != nil || n != 4 {
		t.Fatalf("AdoptDerivedKeys: %d, %v; want 4 (2 tenants x 2 master versions)", n, err)
	}
	if st, err := rot.RewrapDataKeys(ctx, e.store); err != nil || st.Rewrapped != 2 || st.Current != 4 {
		t.Fatalf("RewrapDataKeys: %+v, %v; want 2 rewrapped, 4 current", st, err)
	}
	e.start(t, v2.WithDataKeys(e.store))
	for _, tn := range []struct{ id, key string }{{gone.ID, goneKey}, {kept.ID, keptKey}} {
		traces[tn.id] = append(traces[tn.id], e.chat(t, tn.key, "after rotation of "+tn.id))
	}
	for _, tn := range []struct{ id, key string }{{gone.ID, goneKey}, {kept.ID, keptKey}} {
		for i, id := range traces[tn.id] {
			st, d := e.detail(t, tn.key, id)
			if st != 200 || d.RequestBody == nil || !strings.Contains(*d.RequestBody, " of "+tn.id) {
				t.Fatalf("before delete, trace %d of %s without master 1: status %d, body error %q", i, tn.id, st, d.BodyError)
			}
		}
	}
	var versions []int
	backup := e.copyCiphertexts(t, gone.ID)
	for _, b := range backup {
		versions = append(versions, b.version)
	}
	sort.Ints(versions)
	if diff := cmp.Diff([]int{1, 1, loomcrypto.FirstDataKeyVersion, loomcrypto.FirstDataKeyVersion,
		loomcrypto.FirstDataKeyVersion, loomcrypto.FirstDataKeyVersion}, versions); diff != "" {
		t.Fatalf("key versions of the copied bodies (-want +got):\n%s", diff)
	}

	// 4. Hard delete.
	if err := e.gw.Admin().DeleteTenant(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}

	// The copied ciphertexts open for nobody holding the current master key: not this
	// gateway's keyring, not a fresh process over the database.
	for _, b := range backup {
		_, err := v2.WithDataKeys(e.store).Open(gone.ID, tracing.BodyRecordID(b.traceID, b.part), b.version, b.sealed)
		if !errors.Is(err, loomcrypto.ErrDataKeyDestroyed) {
			t.Fatalf("copied %s body (key version %d) after delete: %v, want ErrDataKeyDestroyed", b.part, b.version, err)
		}
	}
	if st, _ := e.detail(t, goneKey, traces[gone.ID][2]); st != http.StatusUnauthorized {
		t.Fatalf("the deleted tenant's key reads its trace: status %d", st)
	}
	// The boundary, stated by the README: a row sealed before envelope encryption used a
	// key derived from master 1, so whoever still holds master 1 itself can derive it; the
	// deletion shreds those rows once master 1 is destroyed everywhere. The envelope rows
	// stay shut even with master 1 back.
	for _, b := range backup {
		_, err := v21.WithDataKeys(e.store).Open(gone.ID, tracing.BodyRecordID(b.traceID, b.part), b.version, b.sealed)
		if b.version == 1 && err != nil {
			t.Fatalf("derived-era body with master 1 itself: %v (the README says it opens)", err)
		}
		if b.version != 1 && !errors.Is(err, loomcrypto.ErrDataKeyDestroyed) {
			t.Fatalf("envelope body with master 1 back: %v, want ErrDataKeyDestroyed", err)
		}
	}

	// What is left of the tenant: data key tombstones (no key bytes) and the ledger's
	// hashes, nothing else.
	if diff := cmp.Diff(map[string]int{"tenant_data_keys": 3, "ledger_leaves": 3, "ledger_logs": 1, "ledger_root_events": 2}, e.tenantRows(t, gone.ID)); diff != "" {
		t.Errorf("rows left for the deleted tenant (-want +got):\n%s", diff)
	}
	var withBytes int
	if err := e.db.QueryRow(`SELECT count(*) FROM tenant_data_keys WHERE tenant_id = $1 AND (wrapped IS NOT NULL OR destroyed_at IS NULL)`, gone.ID).Scan(&withBytes); err != nil || withBytes != 0 {
		t.Fatalf("tombstones with key bytes: %d, %v", withBytes, err)
	}
	if diff := cmp.Diff(map[string]int{"tenant_data_keys": 3, "traces": 3, "api_keys": 1, "tenants": 1, "ledger_leaves": 3, "ledger_logs": 1},
		e.tenantRows(t, kept.ID)); diff != "" {
		t.Errorf("rows of the other tenant (-want +got):\n%s", diff)
	}

	// The other tenant's traces of every era still open through the API.
	for i, id := range traces[kept.ID] {
		st, d := e.detail(t, keptKey, id)
		if st != 200 || d.RequestBody == nil || !strings.Contains(*d.RequestBody, "of "+kept.ID) || d.BodyError != "" {
			t.Fatalf("after delete, trace %d of the other tenant: status %d, body error %q", i, st, d.BodyError)
		}
	}
	// Trace rows stay immutable outside the hard delete.
	if _, err := e.db.Exec(`DELETE FROM traces WHERE tenant_id = $1`, kept.ID); err == nil {
		t.Fatal("a plain DELETE of trace rows succeeded")
	}
	if _, err := e.db.Exec(`UPDATE traces SET model = 'x' WHERE tenant_id = $1`, kept.ID); err == nil {
		t.Fatal("an UPDATE of trace rows succeeded")
	}
	if err := e.gw.Admin().DeleteTenant(ctx, gone.ID); !errors.Is(err, tenancy.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	// The ledger recorded the deletion in the same transaction, so it still verifies.
	dialect := ledger.SQLite
	if e.dialect == migrations.Postgres {
		dialect = ledger.Postgres
	}
	rep, err := ledger.Verify(ctx, ledger.VerifyOptions{DB: e.db, Dialect: dialect})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failures {
		t.Errorf("ledger after the delete: %+v", f)
	}
}

// The trigger lets a trace row go only with the setting naming its tenant and that
// tenant's data keys destroyed; the setting alone is not enough.
func TestTraceDeleteNeedsDestroyedKeys(t *testing.T) {
	for _, dialect := range []string{migrations.Postgres, migrations.SQLite} {
		t.Run(dialect, func(t *testing.T) {
			e := newShredEnv(t, dialect)
			ctx := context.Background()
			e.start(t, testKeyring(t, 1, 1).WithDataKeys(e.store))
			tn, _ := e.gw.Admin().CreateTenant(ctx, "t")
			key, _, _ := e.gw.Admin().CreateKey(ctx, tn.ID, "k")
			e.chat(t, key, "hello")
			tx, err := e.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if dialect == migrations.Postgres {
				_, err = tx.Exec(`SELECT set_config('loom.tenant_delete', $1, true)`, tn.ID)
			} else {
				_, err = tx.Exec(`INSERT INTO trace_delete_grants (tenant_id) VALUES ($1)`, tn.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(`DELETE FROM traces WHERE tenant_id = $1`, tn.ID); err == nil {
				t.Fatal("trace rows deleted while the tenant's data key is live")
			}
		})
	}
}
