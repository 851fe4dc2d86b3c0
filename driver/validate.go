package driver

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/sets"
)

// CSI size limits (spec "Size Limits"): strings 128 bytes, string maps 4 KiB. Secrets get a larger
// bound on purpose: a CA bundle, client certificate and RSA key in PEM form exceed 4 KiB, and the
// upstream sidecar passes whatever the Secret holds.
const (
	maxStringBytes  = 128
	maxMapBytes     = 4 << 10
	maxSecretsBytes = 64 << 10
)

// checkString enforces a required, size-limited string field.
func checkString(field, value string) error {
	if value == "" {
		return invalidArgument(field, "is required")
	}
	if len(value) > maxStringBytes {
		return invalidArgument(field, "is %d bytes, the CSI limit is %d", len(value), maxStringBytes)
	}
	return nil
}

// checkName enforces the CSI rules for a snapshot name: required, <= 128 bytes, no control characters
// other than common whitespace.
func checkName(field, name string) error {
	if err := checkString(field, name); err != nil {
		return err
	}
	for _, r := range name {
		if (r <= 0x08) || r == 0x0B || r == 0x0C || (r >= 0x0E && r <= 0x1F) || (r >= 0x7F && r <= 0x9F) {
			return invalidArgument(field, "contains the control character U+%04X", r)
		}
	}
	return nil
}

// checkVolumeIDs enforces a non-empty list of distinct, size-limited volume ids.
func checkVolumeIDs(field string, ids []string) error {
	if len(ids) == 0 {
		return invalidArgument(field, "is required")
	}
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		if err := checkString(fmt.Sprintf("%s[%d]", field, i), id); err != nil {
			return err
		}
		if seen[id] {
			return invalidArgument(field, "lists volume %q twice", id)
		}
		seen[id] = true
	}
	return nil
}

// checkMap enforces the total size of a string map and the CSI string limit on its keys.
func checkMap(field string, m map[string]string, limit int) error {
	return checkMapSize(field, m, limit, true)
}

// checkSecrets is checkMap for a secrets field; it never echoes keys, whose names could hint at
// content, only sizes.
func checkSecrets(field string, m map[string]string) error {
	return checkMapSize(field, m, maxSecretsBytes, false)
}

// checkMapSize is the one size check behind checkMap and checkSecrets; echoKeys says whether an
// oversized key may be quoted in the error.
func checkMapSize(field string, m map[string]string, limit int, echoKeys bool) error {
	total := 0
	for k, v := range m {
		if len(k) > maxStringBytes {
			if echoKeys {
				return invalidArgument(field, "key %.40q... is %d bytes, the CSI limit is %d", k, len(k), maxStringBytes)
			}
			return invalidArgument(field, "a key is %d bytes, the CSI limit is %d", len(k), maxStringBytes)
		}
		total += len(k) + len(v)
	}
	if total > limit {
		return invalidArgument(field, "holds %d bytes, the limit is %d", total, limit)
	}
	return nil
}

// sameIDs reports whether two id lists hold the same distinct ids; a list naming an id twice never
// matches, so a duplicate cannot stand in for a missing member.
func sameIDs(a, b []string) bool {
	x := sets.New(a...)
	return len(a) == len(b) && x.Len() == len(a) && x.Equal(sets.New(b...))
}
