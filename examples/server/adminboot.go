package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/analytics"
)

// checkAdminUser checks LOOM_ADMIN_USERNAME and LOOM_ADMIN_PASSWORD before anything starts.
func checkAdminUser(name, password string) error {
	if err := admin.CheckUsername(name); err != nil {
		return fmt.Errorf("LOOM_ADMIN_USERNAME: %v", err.(*admin.InputError).Message)
	}
	if password != "" && (len(password) < admin.MinPasswordLen || len(password) > admin.MaxPasswordLen) {
		return fmt.Errorf("LOOM_ADMIN_PASSWORD must be %d to %d bytes", admin.MinPasswordLen, admin.MaxPasswordLen)
	}
	return nil
}

// adminConfig turns on the admin API over the server's store. Spend is served when the
// analytics store can answer it.
func (s *Server) adminConfig(reads analytics.Store, log *slog.Logger) (*loom.AdminConfig, error) {
	users, err := admin.NewUsers(admin.UsersOptions{Store: s.adminStore, Logger: log})
	if err != nil {
		return nil, err
	}
	ac := &loom.AdminConfig{Users: users}
	if sp, ok := reads.(analytics.Spender); ok {
		ac.Spend = sp
	}
	return ac, nil
}

// bootstrapAdmin makes the first admin user when there is none: LOOM_ADMIN_USERNAME with
// LOOM_ADMIN_PASSWORD (never echoed), or a generated password printed once on stdout (and
// only there, never in the log).
func bootstrapAdmin(ctx context.Context, users *admin.Users, cfg config, stdout io.Writer, log *slog.Logger) error {
	generated, created, err := users.Bootstrap(ctx, cfg.AdminUsername, cfg.AdminPassword)
	switch {
	case err != nil:
		return err
	case !created:
		if cfg.AdminPassword != "" {
			log.Warn("LOOM_ADMIN_PASSWORD ignored: admin users exist already (it only makes the first one); reset a password with: loom admin users reset-password")
		}
	case generated != "":
		log.Info("created the first admin user, password printed once on stdout", "username", cfg.AdminUsername)
		fmt.Fprintf(stdout, "Loom admin user %q, password (shown once, keep it):\n\n    %s\n\n", cfg.AdminUsername, generated)
	default:
		log.Info("created the first admin user from LOOM_ADMIN_USERNAME/LOOM_ADMIN_PASSWORD", "username", cfg.AdminUsername)
	}
	return nil
}
