package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubeletProbes pins down the pinned kubelet's handling of plugin output
// with tiny fake plugins (no AWS involved). These back docs/conformance.md: if
// a Kubernetes bump changes one of these behaviours, this test says which.
func TestKubeletProbes(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	os.Setenv("PROBE_ENV", "from-kubelet")
	os.Setenv("PROBE_ONLY_KUBELET", "kubelet-only")
	bin := &binDir{Dir: t.TempDir()}
	state := t.TempDir()

	const ok = `{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","auth":{"%s":{"username":"u","password":"p"}}}`
	type probe struct {
		name     string
		script   string // body; $H is the probe's host
		wantCred bool
		wantLog  string // substring of the kubelet's error log, "" = no error logged
		env      []envVar
	}
	resp := func(body string) string { return "cat >/dev/null\nprintf '%b' '" + body + "'\n" }
	probes := []probe{
		{name: "baseline", script: resp(fmt.Sprintf(ok, "baseline.probe.test")), wantCred: true},
		{name: "unknown-field", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","expiresAt":"x","auth":{"unknown-field.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "unknown-auth-field", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","auth":{"unknown-auth-field.probe.test":{"username":"u","password":"p","auth":"x"}}}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "duplicate-key", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheKeyType":"Registry","auth":{"duplicate-key.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "wrong-case-field", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","Auth":{"wrong-case-field.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "lowercase-cachekeytype", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"registry","auth":{"lowercase-cachekeytype.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "did not return a valid cacheKeyType"},
		{name: "missing-cachekeytype", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","auth":{"missing-cachekeytype.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "did not return a valid cacheKeyType"},
		{name: "duration-days", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1d","auth":{"duration-days.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "duration-number", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":21600,"auth":{"duration-number.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "duration-null", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":null,"auth":{"duration-null.probe.test":{"username":"u","password":"p"}}}`),
			wantCred: true},
		{name: "version-mismatch", script: resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","cacheKeyType":"Registry","auth":{"version-mismatch.probe.test":{"username":"u","password":"p"}}}`),
			wantLog: "did not match expected apiVersion"},
		{name: "wrong-kind", script: resp(`{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"x"}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "trailing-text", script: resp(fmt.Sprintf(ok, "trailing-text.probe.test") + `\ndone`),
			wantLog: "error reading GVK from response"},
		{name: "trailing-whitespace", script: resp(fmt.Sprintf(ok, "trailing-whitespace.probe.test") + `\n\n  \n`), wantCred: true},
		{name: "leading-log-line", script: resp(`starting\n` + fmt.Sprintf(ok, "leading-log-line.probe.test")),
			wantLog: "error reading GVK from response"},
		{name: "two-objects", script: resp(fmt.Sprintf(ok, "two-objects.probe.test") + fmt.Sprintf(ok, "two-objects.probe.test")),
			wantLog: "error reading GVK from response"},
		{name: "yaml-output", script: resp(`kind: CredentialProviderResponse\napiVersion: credentialprovider.kubelet.k8s.io/v1\ncacheKeyType: Registry\n`),
			wantLog: "error reading GVK from response"},
		{name: "exit-1-stderr", script: "cat >/dev/null\necho 'probe-stderr-marker' >&2\nexit 1\n",
			wantLog: "probe-stderr-marker"},
		{name: "decode-error-hides-stderr", script: "cat >/dev/null\necho 'probe-hidden-marker' >&2\n" + resp(`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","bogus":1}`),
			wantLog: "error decoding credential provider plugin response from stdout"},
		{name: "key-with-scheme-and-v2", script: resp(fmt.Sprintf(ok, "https://key-with-scheme-and-v2.probe.test/v2/")), wantCred: true},
		{name: "key-glob", script: resp(fmt.Sprintf(ok, "*.probe.test")), wantCred: true},
		{name: "key-with-port", script: resp(fmt.Sprintf(ok, "key-with-port.probe.test:443")), wantCred: false},
		{name: "key-other-host", script: resp(fmt.Sprintf(ok, "somewhere-else.probe.test")), wantCred: false},
		{name: "env", script: `cat >/dev/null
printf '{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","auth":{"env.probe.test":{"username":"%s","password":"%s"}}}' "$PROBE_ENV" "$PROBE_ONLY_KUBELET"
`, wantCred: true, env: []envVar{{"PROBE_ENV", "from-config"}}},
		{name: "request", script: fmt.Sprintf("cat > %q\nprintf '%%s' '%s'\n", filepath.Join(state, "request.json"), fmt.Sprintf(ok, "request.probe.test")), wantCred: true},
		{name: "empty-auth-cached", script: fmt.Sprintf("cat >/dev/null\necho run >> %q\nprintf '%%s' '%s'\n", filepath.Join(state, "empty.count"),
			`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry"}`)},
		{name: "zero-duration-not-cached", script: fmt.Sprintf("cat >/dev/null\necho run >> %q\nprintf '%%s' '%s'\n", filepath.Join(state, "zero.count"),
			`{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"0s","auth":{"zero-duration-not-cached.probe.test":{"username":"u","password":"p"}}}`), wantCred: true},
	}

	var specs []providerSpec
	for _, p := range probes {
		name := "probe-" + p.name
		bin.writeScript(t, name, p.script)
		host := p.name + ".probe.test"
		specs = append(specs, providerSpec{Name: name, MatchImages: []string{host}, DefaultCacheDuration: "1h",
			APIVersion: v1API, Env: p.env})
	}
	register(t, writeConfig(t, specs...), bin.Dir, nil)

	results := map[string][]string{}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			image := p.name + ".probe.test/app:1"
			mark := klogMark()
			creds, found := lookup(t, nodePod, image)
			errs := errorLines(klogSince(mark))
			results[p.name] = errs
			if p.wantCred != (found && len(creds) > 0) {
				t.Errorf("credentials found=%t (%+v), want %t", found, creds, p.wantCred)
			}
			if p.wantLog == "" && len(errs) > 0 {
				t.Errorf("unexpected kubelet error: %s", strings.Join(errs, "\n"))
			}
			if p.wantLog != "" && !strings.Contains(strings.Join(errs, "\n"), p.wantLog) {
				t.Errorf("kubelet log %q does not mention %q", errs, p.wantLog)
			}
			t.Logf("kubelet said: %s", strings.Join(errs, "\n"))
		})
	}

	t.Run("decode-error-hides-stderr/no-stderr", func(t *testing.T) {
		if strings.Contains(strings.Join(results["decode-error-hides-stderr"], ""), "probe-hidden-marker") {
			t.Errorf("stderr was included in a decode error")
		}
	})
	t.Run("env/config-wins-and-kubelet-env-inherited", func(t *testing.T) {
		creds, _ := lookup(t, nodePod, "env.probe.test/app")
		if len(creds) != 1 || creds[0].Username != "from-config" || creds[0].Password != "kubelet-only" {
			t.Errorf("env merge: got %+v", creds)
		}
	})
	t.Run("request/bytes", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(state, "request.json"))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"request.probe.test/app"}` + "\n"
		if string(data) != want {
			t.Errorf("request bytes %q, want %q", data, want)
		}
	})
	t.Run("empty-auth-cached/second-lookup", func(t *testing.T) {
		lookup(t, nodePod, "empty-auth-cached.probe.test/other")
		data, _ := os.ReadFile(filepath.Join(state, "empty.count"))
		if n := strings.Count(string(data), "run"); n != 1 {
			t.Errorf("plugin ran %d times; an empty answer should be cached per registry", n)
		}
	})
	t.Run("zero-duration-not-cached/second-lookup", func(t *testing.T) {
		lookup(t, nodePod, "zero-duration-not-cached.probe.test/app")
		data, _ := os.ReadFile(filepath.Join(state, "zero.count"))
		if n := strings.Count(string(data), "run"); n != 2 {
			t.Errorf("plugin ran %d times; cacheDuration 0s should not be cached", n)
		}
	})
}
