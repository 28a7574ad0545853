package conformance

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// registry is tests/registry_server.py: Debian's docker-registry on 127.0.0.1 with TLS from a
// throwaway CA and htpasswd auth for user AWS with the password the AWS stub is told to issue.
type registry struct {
	Port       int    `json:"port"`
	CA         string `json:"ca"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	names      map[string]bool
}

func startRegistry(t *testing.T, password string, names []string) *registry {
	t.Helper()
	// The script needs cryptography and bcrypt: the project's virtualenv has them (scripts/setup).
	python := filepath.Join(repoRoot(t), ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing (run scripts/setup): %v", python, err)
	}
	args := []string{filepath.Join(repoRoot(t), "tests", "registry_server.py"), "--password", password}
	for _, n := range names {
		args = append(args, "--name", n)
	}
	cmd := exec.Command(python, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting tests/registry_server.py: %v", err)
	}
	t.Cleanup(func() {
		// SIGTERM lets the script stop docker-registry and remove its files.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, r)
	}()
	reg := &registry{names: map[string]bool{}}
	select {
	case line := <-lines:
		if err := json.Unmarshal([]byte(line), reg); err != nil || reg.Port == 0 {
			t.Fatalf("tests/registry_server.py printed %q (is docker-registry installed? scripts/setup): %v", line, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("tests/registry_server.py did not report its registry within 60s")
	}
	for _, n := range names {
		reg.names[n] = true
	}
	return reg
}

// client is an HTTPS client that trusts the test CA and reaches the registry under its ECR names.
// We control no DNS and /etc/hosts is global state, so the dialer maps those names (and only those)
// to the registry on 127.0.0.1; TLS is still checked against the name in the URL.
func (r *registry) client(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(r.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", r.CA)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Proxy:           nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil || port != "443" || !r.names[host] {
				return nil, fmt.Errorf("the test registry does not serve %s", addr)
			}
			return dialer.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", r.Port))
		},
	}
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

// manifest fetches the seeded image's manifest as a runtime would, with basic auth when user != "".
func (r *registry) manifest(t *testing.T, host, user, password string) (int, string) {
	t.Helper()
	url := fmt.Sprintf("https://%s/v2/%s/manifests/%s", host, r.Repository, r.Tag)
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := r.client(t).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Docker-Content-Digest")
}

// TestCredentialsOpenARealRegistry: what the kubelet's keyring returns for an image is accepted by a
// real registry serving that image's host (the manifest comes back), and the registry refuses
// anonymous requests and passwords the stub did not issue, so the check can fail.
func TestCredentialsOpenARealRegistry(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	password := "registry-pw-" + hex.EncodeToString(secret)
	s.configure(t, map[string]any{"password": password})
	private := "123456789012.dkr.ecr.us-west-2.amazonaws.com"
	reg := startRegistry(t, password, []string{private, "public.ecr.aws"})
	for k, v := range s.awsEnv(t.TempDir()) {
		os.Setenv(k, v)
	}
	p, _ := eksProvider(t)
	bin := newBinDir(t, providerName, false)
	register(t, writeConfig(t, p), bin.Dir, nil)

	for _, host := range []string{private, "public.ecr.aws"} {
		t.Run(host, func(t *testing.T) {
			image := fmt.Sprintf("%s/%s:%s", host, reg.Repository, reg.Tag)
			creds, found := lookup(t, nodePod, image)
			cred := singleCred(t, image, creds, found)
			status, digest := reg.manifest(t, host, cred.Username, cred.Password)
			if status != http.StatusOK || digest != reg.Digest {
				t.Errorf("%s with the keyring's credentials: HTTP %d digest %q, want 200 %s", image, status, digest, reg.Digest)
			}
			if status, _ := reg.manifest(t, host, "", ""); status != http.StatusUnauthorized {
				t.Errorf("%s without credentials: HTTP %d, want 401", image, status)
			}
			if status, _ := reg.manifest(t, host, cred.Username, cred.Password+"x"); status != http.StatusUnauthorized {
				t.Errorf("%s with a password the stub did not issue: HTTP %d, want 401", image, status)
			}
		})
	}
	if n := len(tokenCalls(s.calls(t))); n != 2 {
		t.Errorf("%d token calls, want 2 (one per registry)", n)
	}
	if strings.Contains(strings.Join(klogSince(0), "\n"), password) {
		t.Error("the registry password appeared in the kubelet log")
	}
}
