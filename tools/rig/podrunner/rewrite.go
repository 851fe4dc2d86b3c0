package podrunner

import (
	"path/filepath"
	"sort"
	"strings"
)

// mountMap maps one path as a container sees it to the host path that backs it.
type mountMap struct {
	Container string
	Host      string
}

// pathRewriter rewrites container paths to host paths inside arbitrary strings (command, args, env).
type pathRewriter struct {
	mounts []mountMap // longest container path first, so nested mounts win
}

// newPathRewriter cleans the container paths and orders them so the most specific one matches first.
// A mount at "/" is dropped: rewriting every absolute path would make host paths unusable.
func newPathRewriter(mounts []mountMap) *pathRewriter {
	var ms []mountMap
	for _, m := range mounts {
		c := filepath.Clean(m.Container)
		if !filepath.IsAbs(c) || c == "/" {
			continue
		}
		ms = append(ms, mountMap{Container: c, Host: filepath.Clean(m.Host)})
	}
	sort.SliceStable(ms, func(i, j int) bool { return len(ms[i].Container) > len(ms[j].Container) })
	return &pathRewriter{mounts: ms}
}

// isNameByte reports whether c can be part of a file name as people write them on command lines.
func isNameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("._-~+@%", c) >= 0
}

// Rewrite replaces every occurrence of a mounted container path that stands at a path boundary: the
// path starts the string or follows a byte that cannot be part of a path ("--cacert=/etc/x", "a:/x"),
// and it ends the string, continues with "/", or is followed by a byte that cannot be part of a name.
// So "/etc/tls/ca.crt" is rewritten under a mount at "/etc/tls", but "/etc/tlsx" and "/opt/etc/tls" are not.
func (r *pathRewriter) Rewrite(s string) string {
	if len(r.mounts) == 0 || !strings.Contains(s, "/") {
		return s
	}
	var b strings.Builder
	i := 0
	for i < len(s) {
		if s[i] == '/' && (i == 0 || (s[i-1] != '/' && !isNameByte(s[i-1]))) {
			if m, ok := r.match(s[i:]); ok {
				b.WriteString(m.Host)
				i += len(m.Container)
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

func (r *pathRewriter) match(s string) (mountMap, bool) {
	for _, m := range r.mounts {
		if !strings.HasPrefix(s, m.Container) {
			continue
		}
		rest := s[len(m.Container):]
		if rest == "" || rest[0] == '/' || !isNameByte(rest[0]) {
			return m, true
		}
	}
	return mountMap{}, false
}

// HostPath maps one container path (for example a working directory) to the host, and reports whether
// it lies inside a mount.
func (r *pathRewriter) HostPath(p string) (string, bool) {
	p = filepath.Clean(p)
	for _, m := range r.mounts {
		if p == m.Container {
			return m.Host, true
		}
		if strings.HasPrefix(p, m.Container+"/") {
			return m.Host + p[len(m.Container):], true
		}
	}
	return "", false
}

// expandVars expands $(NAME) references the way the kubelet does for command, args and env values:
// a defined NAME is replaced by its value, "$$" escapes a literal "$", and an undefined reference is
// left untouched.
func expandVars(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
