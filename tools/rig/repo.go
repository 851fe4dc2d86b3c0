package rig

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ModulePath is the main module of this repository; RepoRoot looks for its go.mod.
const ModulePath = "github.com/etcd-snapshot-driver/etcd-snapshot-driver"

// RepoRoot returns the repository root: the nearest directory at or above the working directory whose
// go.mod declares ModulePath. Nested modules such as tools/upstream are skipped on the way up.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("rig: working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if modulePathOf(filepath.Join(dir, "go.mod")) == ModulePath {
			return dir, nil
		}
		if parent := filepath.Dir(dir); parent == dir {
			return "", fmt.Errorf("rig: no go.mod of module %s at or above %s", ModulePath, wd)
		}
	}
}

// modulePathOf returns the module path declared in a go.mod file, or "" when it cannot be read.
func modulePathOf(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
