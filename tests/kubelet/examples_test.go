package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfigsAccepted: every CredentialProviderConfig shipped in
// examples/credentialproviders passes the kubelet's strict decoding and
// validation, and registers against a bin dir holding our executable.
func TestExampleConfigsAccepted(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "examples", "credentialproviders")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("no examples: %v", err)
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".json" && ext != ".yaml" && ext != ".yml") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(data), "CredentialProviderConfig") {
			continue
		}
		t.Run(e.Name(), func(t *testing.T) {
			if !isolated(t) {
				return
			}
			sanitizeEnv(t)
			bin := newBinDir(t, providerName, false)
			register(t, path, bin.Dir, nil)
		})
	}
}
