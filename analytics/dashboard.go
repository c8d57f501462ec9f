package analytics

import (
	"embed"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// web holds the dashboard: plain ES modules and CSS, with uPlot vendored under vendor/
// (see web/vendor.sh). No build step: what is embedded is what the browser runs.
//
//go:embed web/index.html web/admin.html web/*.js web/*.css web/vendor/uPlot.esm.js web/vendor/uPlot.min.css web/vendor/uPlot.LICENSE
var web embed.FS

// dashboardCSP allows the dashboard's own files and its calls to the API on the same
// origin, nothing else: no inline script, no foreign origin, no framing. Everything a
// client sent is rendered as text, and this stops markup that slipped through anyway.
const dashboardCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Dashboard returns the handler of the web dashboard, for GET and HEAD of "/" and its
// files. It reads the analytics API (see Paths) at /v1/ on the same origin with the
// tenant key the user signs in with, so mount it next to a Gateway serving that API,
// at "/" or under a prefix with http.StripPrefix. Its admin pages (admin.html) sign in as
// an admin user and call the admin API at /admin/ on the same origin (see package admin),
// under the same Content-Security-Policy.
func Dashboard() http.Handler {
	files, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "" {
			name = "index.html"
		}
		f, err := files.Open(name) // fs.ValidPath: no "..", no empty or dot elements
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		rs, ok := f.(io.ReadSeeker) // embedded files are; directories are not
		if st, err := f.Stat(); err != nil || st.IsDir() || !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, name, time.Time{}, rs)
	})
}
