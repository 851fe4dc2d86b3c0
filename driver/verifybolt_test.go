package driver

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestBoltMirroredVersion fails when the bbolt linked into the driver is not the release
// verifybolt.go mirrors: a new bbolt may change its on-disk format or its Tx.Check, so the walker
// must be re-read against it before boltMirroredVersion moves.
func TestBoltMirroredVersion(t *testing.T) {
	linked := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "go.etcd.io/bbolt" {
				linked = dep.Version
				if dep.Replace != nil {
					linked = dep.Replace.Version
				}
			}
		}
	}
	if linked == "" {
		// No module information in this test binary: ask go.mod, which the build obeys.
		data, err := os.ReadFile("../go.mod")
		if err != nil {
			t.Fatalf("no build info and no go.mod: %v", err)
		}
		for line := range strings.Lines(string(data)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "go.etcd.io/bbolt" {
				linked = f[1]
			}
		}
	}
	if linked != boltMirroredVersion {
		t.Errorf("go.etcd.io/bbolt %s is linked, but verifybolt.go mirrors %s: check its layout and checks against the new release, then update boltMirroredVersion",
			linked, boltMirroredVersion)
	}
}

// boltContent records what walkBolt visits, in bbolt's ForEach order.
type boltContent struct{ lines []string }

func (c *boltContent) bucket(name []byte) error {
	c.lines = append(c.lines, fmt.Sprintf("bucket %q", name))
	return nil
}

func (c *boltContent) entry(key, value []byte) error {
	if value == nil {
		c.lines = append(c.lines, fmt.Sprintf("  %q = <bucket>", key))
	} else {
		c.lines = append(c.lines, fmt.Sprintf("  %q = %q", key, value))
	}
	return nil
}

// bboltContent is what bbolt itself reads from path, in the form boltContent records it, and the
// first error of its Tx.Check.
func bboltContent(t *testing.T, path string) ([]string, error) {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var c boltContent
	var check error
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			check = err
			break
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			_ = c.bucket(name)
			return b.ForEach(c.entry)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return c.lines, check
}

// putKeys creates bucket name under parent (a Tx or a Bucket) and puts n keys named by format and
// the key's index, each with a value of size bytes.
func putKeys(parent interface {
	CreateBucketIfNotExists([]byte) (*bolt.Bucket, error)
}, name string, n int, format string, size int) (*bolt.Bucket, error) {
	b, err := parent.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, err
	}
	for i := range n {
		key := format
		if strings.Contains(format, "%") {
			key = fmt.Sprintf(format, i)
		}
		if err := b.Put([]byte(key), bytes.Repeat([]byte{byte('a' + i%26)}, size)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// TestWalkBoltAgreesWithBbolt builds databases with bbolt (inline and paged buckets, nested buckets,
// overflow pages, freed pages, with and without a synced freelist, two page sizes) and checks that
// walkBolt finds each sound and visits exactly what bbolt's ForEach gives, in the same order.
func TestWalkBoltAgreesWithBbolt(t *testing.T) {
	cases := []struct {
		name string
		opts bolt.Options
		fill func(tx *bolt.Tx) error
	}{
		{"inline buckets", bolt.Options{}, func(tx *bolt.Tx) error {
			for _, name := range []string{"meta", "key", "a"} {
				if _, err := putKeys(tx, name, 1, "k-"+name, 1); err != nil {
					return err
				}
			}
			return nil
		}},
		{"paged bucket with branch pages", bolt.Options{}, func(tx *bolt.Tx) error {
			_, err := putKeys(tx, "key", 5000, "key-%06d", 40)
			return err
		}},
		{"overflow pages and a nested bucket", bolt.Options{PageSize: 8192}, func(tx *bolt.Tx) error {
			b, err := putKeys(tx, "key", 1, "large", 100_000)
			if err != nil {
				return err
			}
			_, err = putKeys(b, "nested", 300, "n-%04d", 5)
			return err
		}},
		{"no synced freelist", bolt.Options{NoFreelistSync: true}, func(tx *bolt.Tx) error {
			_, err := putKeys(tx, "key", 1000, "k%05d", 1)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "test.db")
			db, err := bolt.Open(path, 0o600, &tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.fill); err != nil {
				t.Fatal(err)
			}
			// A second transaction deletes half the keys of "key", so pages are freed.
			if err := db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte("key"))
				var del [][]byte
				i := 0
				_ = b.ForEach(func(k, v []byte) error {
					if v != nil && i%2 == 0 {
						del = append(del, bytes.Clone(k))
					}
					i++
					return nil
				})
				for _, k := range del {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			want, check := bboltContent(t, path)
			if check != nil {
				t.Fatalf("bbolt's own check fails the database it wrote: %v", check)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got boltContent
			if err := walkBolt(data, &got); err != nil {
				t.Fatalf("walkBolt refuses a database bbolt finds sound: %v", err)
			}
			if g, w := strings.Join(got.lines, "\n"), strings.Join(want, "\n"); g != w {
				t.Errorf("walkBolt visited (%d lines):\n%.2000s\nbbolt's ForEach gives (%d lines):\n%.2000s", len(got.lines), g, len(want), w)
			}
		})
	}
}

// TestWalkBoltAgreesWithBboltOnDamage zeroes the root page of a paged bucket: bbolt's Tx.Check and
// walkBolt must both refuse the file.
func TestWalkBoltAgreesWithBboltOnDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	if err := db.Update(func(tx *bolt.Tx) error { _, err := putKeys(tx, "key", 2000, "key-%06d", 5); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket([]byte("key")).Root()); return nil }); err != nil {
		t.Fatal(err)
	}
	pageSize := db.Info().PageSize
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if root == 0 {
		t.Fatal("the key bucket is inline; the test needs more keys")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clear(data[int(root)*pageSize : (int(root)+1)*pageSize])
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if bboltCheck(path) == nil {
		t.Fatal("bbolt's check passes the damaged database; the test damages the wrong page")
	}
	if err := walkBolt(data, &boltContent{}); err == nil {
		t.Error("walkBolt accepts a database bbolt's check refuses")
	}
}

// bboltCheck returns the first error of bbolt's Tx.Check on path, without ForEach, which could fault
// on a damaged file.
func bboltCheck(path string) error {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	var check error
	_ = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			check = err
			break
		}
		return nil
	})
	return check
}
