package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// launcherPrefix marks the launcher's own flags; they are not passed to etcd.
const launcherPrefix = "--launcher-"

// options are the launcher's own flags.
type options struct {
	membersFile string
	tlsDir      string
	etcd        string // executable name or path, looked up in PATH
	extra       []string
}

// parseArgs separates the launcher's flags (--launcher-x=value) from etcd's.
func parseArgs(args []string) (options, error) {
	o := options{etcd: "etcd"}
	for _, a := range args {
		rest, ok := strings.CutPrefix(a, launcherPrefix)
		if !ok {
			o.extra = append(o.extra, a)
			continue
		}
		name, value, hasValue := strings.Cut(rest, "=")
		if !hasValue || value == "" {
			return o, fmt.Errorf("flag %s needs a value: %s%s=...", a, launcherPrefix, name)
		}
		switch name {
		case "members":
			o.membersFile = value
		case "tls-dir":
			o.tlsDir = value
		case "etcd":
			o.etcd = value
		default:
			return o, fmt.Errorf("unknown flag %s (the launcher knows %smembers, %stls-dir and %setcd)", a, launcherPrefix, launcherPrefix, launcherPrefix)
		}
	}
	if o.membersFile == "" {
		return o, errors.New("flag " + launcherPrefix + "members (the member table file) is required")
	}
	if o.tlsDir == "" {
		return o, errors.New("flag " + launcherPrefix + "tls-dir (the directory of the members' certificates) is required")
	}
	return o, nil
}

// Plan reads the table and returns the etcd executable and its argv (argv[0] included).
func Plan(args []string, getenv func(string) string) (path string, argv []string, summary string, err error) {
	o, err := parseArgs(args)
	if err != nil {
		return "", nil, "", err
	}
	pod := getenv("POD_NAME")
	if pod == "" {
		return "", nil, "", errors.New("POD_NAME is not set: give the container env POD_NAME from fieldRef metadata.name")
	}
	data, err := os.ReadFile(o.membersFile)
	if err != nil {
		return "", nil, "", fmt.Errorf("read the member table: %w", err)
	}
	t, err := ParseTable(data)
	if err != nil {
		return "", nil, "", fmt.Errorf("%s: %w", o.membersFile, err)
	}
	etcdArgs, err := t.EtcdArgs(pod, o.tlsDir, o.extra)
	if err != nil {
		return "", nil, "", err
	}
	for _, f := range []string{"ca.crt", pod + ".crt", pod + ".key"} {
		if _, err := os.Stat(filepath.Join(o.tlsDir, f)); err != nil {
			return "", nil, "", fmt.Errorf("TLS file of member %s: %w", pod, err)
		}
	}
	path, err = exec.LookPath(o.etcd)
	if err != nil {
		return "", nil, "", fmt.Errorf("etcd executable: %w", err)
	}
	i, _ := t.Ordinal(pod)
	m := t.Members[i]
	summary = fmt.Sprintf("pod %s is member %d of %d: client %s, peer %s", pod, i, len(t.Members), m.ClientURL(), m.PeerURL())
	return path, append([]string{filepath.Base(path)}, etcdArgs...), summary, nil
}
