package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// CheckRestoreConfig refuses flag combinations that cannot work, before any API call: the restore
// subcommand reports its error as bad usage.
func CheckRestoreConfig(cfg RestoreConfig) error {
	return checkRestoreConfig(cfg)
}

// ParseEndpoints reads the comma-separated client URLs of the restore subcommand's -endpoints; a bare
// host:port means https.
func ParseEndpoints(list string) ([]string, error) {
	return normalizeEndpoints(strings.Split(list, ","), false)
}

// RunRestore is the `restore` subcommand once its flags are parsed and its clients built (main.go):
// it restores, prints the table on stdout and the reason of a failure on stderr. Exit 0 when restored
// (and, with -scale or -wait, checked), 1 on failure.
func RunRestore(ctx context.Context, cfg RestoreConfig, stdout, stderr io.Writer) int {
	report, err := Restore(ctx, cfg)
	if report != nil && len(report.Members) > 0 {
		report.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 1
	}
	return 0
}

// ReadCredentialFiles reads the PEM files of -etcd-ca, -etcd-cert and -etcd-key: all three or none
// (nil, nil).
func ReadCredentialFiles(caFile, certFile, keyFile string) (*Credentials, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("-etcd-ca, -etcd-cert and -etcd-key go together: give all three or none")
	}
	var c Credentials
	for _, f := range []struct {
		flag, path string
		dst        *[]byte
	}{{"-etcd-ca", caFile, &c.CA}, {"-etcd-cert", certFile, &c.Cert}, {"-etcd-key", keyFile, &c.Key}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
		*f.dst = b
	}
	return &c, nil
}

// WriteTable prints one row per member and the check's result.
func (r *RestoreReport) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tPVC\tREVISION\tKEYS\tOLD DATA KEPT AT\tTIME")
	for _, m := range r.Members {
		kept := m.KeptAt
		if kept == "" {
			kept = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", m.Member, m.PVC, m.Revision, m.Keys, kept, m.Duration.Round(100*time.Millisecond))
	}
	tw.Flush()
	if c := r.Check; c != nil {
		fmt.Fprintf(w, "cluster: healthy (%d of %d voters, leader %s), revision %d (>= %d), %d keys (snapshot %d)\n",
			c.Healthy, c.Voters, c.Leader, c.Revision, c.WantRevision, c.Keys, c.WantKeys)
	}
	if r.Total > 0 {
		fmt.Fprintf(w, "restore %s of snapshot %s into namespace %s took %s\n", r.RestoreID, r.SnapshotID, r.Namespace, r.Total.Round(100*time.Millisecond))
	}
}
