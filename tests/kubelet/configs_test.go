package conformance

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/kubernetes/pkg/credentialprovider/plugin"
	"k8s.io/kubernetes/pkg/features"
)

// configCase is one entry of tests/data/kubelet-configs.json (its "about" says what each field means).
type configCase struct {
	ID             string                     `json:"id"`
	Providers      []json.RawMessage          `json:"providers"`
	Config         json.RawMessage            `json:"config"`
	Text           *string                    `json:"text"`
	Prefix         string                     `json:"prefix"`
	Repeat         int                        `json:"repeat"`
	File           string                     `json:"file"`
	Files          map[string]json.RawMessage `json:"files"`
	Subdirs        []string                   `json:"subdirs"`
	Missing        bool                       `json:"missing"`
	SATokenGate    *bool                      `json:"sa_token_gate"`
	Errors         [][2]string                `json:"errors"`
	KubeletError   string                     `json:"kubelet_error"`
	KubeletAccepts string                     `json:"kubelet_accepts"`
}

// content is a file's bytes: a JSON string is the text itself, anything else the document as JSON.
func content(raw json.RawMessage) []byte {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return []byte(text)
	}
	return raw
}

// write lays the case out below dir and returns the path to give the kubelet.
func (c configCase) write(t *testing.T, dir string) string {
	t.Helper()
	name := c.File
	if name == "" {
		name = "config.json"
	}
	var data []byte
	switch {
	case c.Providers != nil:
		doc, err := json.Marshal(map[string]any{
			"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig", "providers": c.Providers,
		})
		if err != nil {
			t.Fatal(err)
		}
		data = doc
	case c.Config != nil:
		data = c.Config
	case c.Text != nil:
		data = []byte(c.Prefix + strings.Repeat(*c.Text, max(c.Repeat, 1)))
	case c.Missing:
		return filepath.Join(dir, "absent.json")
	default:
		root := filepath.Join(dir, "config.d")
		for _, sub := range append([]string{""}, c.Subdirs...) {
			if err := os.MkdirAll(filepath.Join(root, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for file, raw := range c.Files {
			if err := os.WriteFile(filepath.Join(root, file), content(raw), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// binDir holds an executable for every provider name a file of the config can be read to have, so that
// a refusal is the config's, never a missing plugin binary.
func binDirFor(t *testing.T, configPath string) string {
	t.Helper()
	bin := t.TempDir()
	files := []string{configPath}
	if st, err := os.Stat(configPath); err == nil && st.IsDir() {
		files, _ = filepath.Glob(filepath.Join(configPath, "*"))
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		var doc struct {
			Providers []struct {
				Name string `json:"name"`
			} `json:"providers"`
		}
		if yaml.Unmarshal(data, &doc) != nil {
			continue
		}
		for _, p := range doc.Providers {
			if p.Name == "" || p.Name == "." || p.Name == ".." || strings.Contains(p.Name, "/") {
				continue
			}
			if err := os.WriteFile(filepath.Join(bin, p.Name), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return bin
}

// TestConfigCases feeds every case our validator judges to the kubelet's own registration
// (RegisterCredentialProviderPlugins: strict decoding, validation, binary look-up): what we reject, it
// must reject too (unless the case records why it legitimately accepts it), and what we accept, it
// must accept.
func TestConfigCases(t *testing.T) {
	var file struct {
		Cases []configCase `json:"cases"`
	}
	readJSON(t, filepath.Join(repoRoot(t), "tests", "data", "kubelet-configs.json"), &file)
	if len(file.Cases) == 0 {
		t.Fatal("no cases in tests/data/kubelet-configs.json")
	}
	for _, c := range file.Cases {
		t.Run(c.ID, func(t *testing.T) {
			if !isolated(t) {
				return
			}
			if c.SATokenGate != nil {
				setFeatureGate(t, features.KubeletServiceAccountTokenForCredentialProviders, *c.SATokenGate)
			}
			path := c.write(t, t.TempDir())
			captureKlog()
			api := &fakeAPI{}
			err := plugin.RegisterCredentialProviderPlugins(path, binDirFor(t, path), api.getServiceAccountToken, api.getServiceAccount)
			wantRefusal := len(c.Errors) > 0 && c.KubeletAccepts == ""
			switch {
			case wantRefusal && err == nil:
				t.Fatalf("the kubelet accepted a config our validator rejects with %v", c.Errors)
			case !wantRefusal && err != nil:
				t.Fatalf("the kubelet refused a config our validator accepts: %v", err)
			case err != nil:
				t.Logf("refused as expected: %v", err)
				if c.KubeletError == "" || !strings.Contains(err.Error(), c.KubeletError) {
					t.Fatalf("the kubelet's refusal %q does not contain the case's kubelet_error %q", err, c.KubeletError)
				}
			case c.KubeletError != "":
				t.Fatalf("kubelet_error %q recorded for a config the kubelet accepts", c.KubeletError)
			}
		})
	}
}
