/* hostkey.c - the server's host key against known_hosts (known_hosts.c reads the files as
 * OpenSSH does: markers, hashed names, patterns, several files). Unknown keys are refused unless the spec says
 * accept-new (recorded, in a file made 0600 whatever the umask, the name hashed with
 * hash_known_hosts) or off (not checked); either of
 * these leaves a note on the session for the embedder to say, as ssh says "Permanently added". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "known_hosts.h"

/* "ssh-ed25519 SHA256:..." of the server's key into out ("?" if none). */
static void fingerprint(ssh_session ssh, char *out, size_t cap)
{
    char fp[200] = "?";
    ssh_key key = NULL;
    if (ssh_get_server_publickey(ssh, &key) == SSH_OK) {
        unsigned char *hash = NULL;
        size_t hlen = 0;
        if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) == 0) {
            char *f = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
            if (f) {
                snprintf(fp, sizeof fp, "%s %s", ssh_key_type_to_char(ssh_key_type(key)), f);
                ssh_string_free_char(f);
            }
            ssh_clean_pubkey_hash(&hash);
        }
        ssh_key_free(key);
    }
    snprintf(out, cap, "%s", fp);
}

/* The known_hosts file keys are recorded in: the spec's, else ~/.ssh/known_hosts. */
static void known_hosts_path(const sc_hostspec *spec, char *out, size_t cap)
{
    if (spec->known_hosts) {
        snprintf(out, cap, "%s", spec->known_hosts);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(out, cap, "%s/.ssh/known_hosts", home ? home : "");
}

/* Creates path (and its directory) private to the user when it does not exist yet, so that
 * libssh's append never makes it world-writable under a loose umask. */
static void ensure_private_file(const char *path)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) == 0)
            chmod(dir, 0700);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        fchmod(fd, 0600);
        close(fd);
    }
}

/* Appends one known_hosts line (as ssh does: the name hashed with HashKnownHosts). 0, or -1. */
static int record_line(const char *path, const char *line, int len)
{
    if (len < 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, line, (size_t)len);
    int e = errno;
    close(fd);
    errno = e;
    return w == len ? 0 : -1;
}

/* The server key's type name and base64 blob (to free with ssh_string_free_char), or -1. */
static int server_key(ssh_session ssh, char *type, size_t cap, char **b64)
{
    ssh_key key = NULL;
    if (ssh_get_server_publickey(ssh, &key) != SSH_OK)
        return -1;
    snprintf(type, cap, "%s", ssh_key_type_to_char(ssh_key_type(key)));
    int rc = ssh_pki_export_pubkey_base64(key, b64);
    ssh_key_free(key);
    return rc == SSH_OK ? 0 : -1;
}

/* The files to check: the spec's, else OpenSSH's defaults (the user's, then the global ones). */
static int files_to_check(const sc_hostspec *spec, const char *user_file, const char **files,
                          char (*buf)[512], int max)
{
    int n = 0;
    if (spec->n_known_hosts_files > 0) {
        for (int i = 0; i < spec->n_known_hosts_files && n < max; i++)
            files[n++] = spec->known_hosts_files[i];
        return n;
    }
    const char *home = getenv("HOME");
    files[n++] = user_file;
    if (!spec->known_hosts) {
        snprintf(buf[0], sizeof buf[0], "%s/.ssh/known_hosts2", home ? home : "");
        files[n++] = buf[0];
    }
    files[n++] = "/etc/ssh/ssh_known_hosts";
    files[n++] = "/etc/ssh/ssh_known_hosts2";
    return n;
}

int sc_hostkey_check(ssh_session ssh, const sc_hostspec *spec, const char *label, int hop, char *fp,
                     size_t fplen, int *note, sc_err *err)
{
    fingerprint(ssh, fp, fplen);
    *note = SC_HOSTKEY_NOTE_NONE;
    char path[512];
    known_hosts_path(spec, path, sizeof path);
    char type[64], name[300], where[600];
    char *b64 = NULL;
    if (server_key(ssh, type, sizeof type, &b64) < 0) {
        if (spec->hostkey_mode == SC_HOSTKEY_OFF) {
            *note = SC_HOSTKEY_NOTE_UNCHECKED;
            return 0;
        }
        sc_err_format(err, SC_EHOSTKEY, label, hop, "host key", NULL, "cannot read it: %s",
                      ssh_get_error(ssh));
        return -1;
    }
    const char *files[64];
    char buf[1][512];
    int n = files_to_check(spec, path, files, buf, 64);
    kh_lookup_name(name, sizeof name, spec->host, spec->port);
    kh_result r = kh_check(files, n, name, type, b64, where, sizeof where);
    char line[4096];
    int line_len = kh_format_line(line, sizeof line, name, type, b64, spec->hash_known_hosts);
    ssh_string_free_char(b64);
    if (r == KH_REVOKED_KEY) { /* refused whatever the spec says, as ssh */
        sc_err_format(err, SC_EHOSTKEY, label, hop, "host key", "revoked",
                      "the server's key %s is REVOKED (%s)", fp, where);
        return -1;
    }
    if (spec->hostkey_mode == SC_HOSTKEY_OFF) {
        *note = SC_HOSTKEY_NOTE_UNCHECKED;
        return 0;
    }
    if (r == KH_CA && spec->hostkey_mode == SC_HOSTKEY_ACCEPT_NEW)
        r = KH_NOT_FOUND; /* as ssh: the plain key is new, and is learned */
    switch (r) {
    case KH_OK:
        return 0;
    case KH_CA:
        sc_err_format(err, SC_EHOSTKEY, label, hop, "host key", "unsupported",
                      "only a @cert-authority line names this host (%s), and host certificates "
                      "are not supported (libssh 0.10 does not negotiate them); the server sent "
                      "%s: add its key to known_hosts",
                      where, fp);
        return -1;
    case KH_CHANGED:
    case KH_OTHER:
        sc_err_format(err, SC_EHOSTKEY, label, hop, "host key", "changed",
                      "HOST KEY HAS CHANGED (possible man-in-the-middle); server sent %s, "
                      "known_hosts has another (%s)",
                      fp, where);
        return -1;
    case KH_NOT_FOUND:
    default:
        if (spec->hostkey_mode == SC_HOSTKEY_ACCEPT_NEW) {
            ensure_private_file(path);
            if (record_line(path, line, line_len) < 0) {
                sc_err_format(err, SC_EHOSTKEY, label, hop, "host key", NULL,
                              "cannot record %s in %s: %s", fp, path, strerror(errno));
                return -1;
            }
            *note = SC_HOSTKEY_NOTE_LEARNED;
            return 0;
        }
        sc_err_format(err, SC_EHOSTKEY, label, hop, "host key", "unknown",
                      "unknown host key %s (not in %s; use host_key=\"accept-new\" to learn it)",
                      fp, path);
        return -1;
    }
}

/* libssh 0.10's default host key algorithms (kex.c), without the certificate types it does not
 * negotiate */
#define LIBSSH_HOSTKEYS                                                                            \
    "ssh-ed25519,ecdsa-sha2-nistp521,ecdsa-sha2-nistp384,ecdsa-sha2-nistp256,"                     \
    "sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256"

typedef struct {
    char known[512]; /* ",alg,alg," of the known keys' signature algorithms */
    size_t len;
} known_algs;

#define ALG_MAX 80 /* an algorithm's name with its two commas, and the NUL */

/* Whether the n bytes at alg name one of k's algorithms. */
static int known(const known_algs *k, const char *alg, size_t n)
{
    char probe[ALG_MAX];
    if (n + 3 > sizeof probe)
        return 0;
    snprintf(probe, sizeof probe, ",%.*s,", (int)n, alg);
    return strstr(k->known, probe) != NULL;
}

static void add_alg(known_algs *k, const char *alg, size_t n)
{
    if (n + 3 > ALG_MAX || known(k, alg, n) || k->len + n + 2 > sizeof k->known)
        return;
    if (k->len == 0)
        k->known[k->len++] = ',';
    memcpy(k->known + k->len, alg, n);
    k->len += n;
    k->known[k->len++] = ',';
    k->known[k->len] = '\0';
}

static void note_key(const kh_line *l, const char *file, long lineno, void *ud)
{
    (void)file;
    (void)lineno;
    if (l->marker != KH_PLAIN)
        return;
    if (l->type_len == 7 && memcmp(l->type, "ssh-rsa", 7) == 0) { /* one key, three signatures */
        add_alg(ud, "rsa-sha2-512", 12);
        add_alg(ud, "rsa-sha2-256", 12);
    }
    add_alg(ud, l->type, l->type_len);
}

/* Appends the names of list that are (want_known != 0) or are not in k, each followed by a
 * comma. */
static size_t pick(const char *list, const known_algs *k, int want_known, char *out, size_t at,
                   size_t cap)
{
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && known(k, p, n) == want_known && at + n + 1 < cap) {
            memcpy(out + at, p, n);
            at += n;
            out[at++] = ',';
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return at;
}

int sc_hostkey_algorithms(const sc_hostspec *spec, char *out, size_t cap)
{
    char path[512], name[300];
    known_hosts_path(spec, path, sizeof path);
    const char *files[64];
    char buf[1][512];
    int n = files_to_check(spec, path, files, buf, 64);
    kh_lookup_name(name, sizeof name, spec->host, spec->port);
    known_algs k = {.len = 0};
    k.known[0] = '\0';
    kh_each(files, n, name, note_key, &k);
    if (k.len == 0 || cap == 0)
        return 0;
    const char *wanted = spec->hostkeys ? spec->hostkeys : LIBSSH_HOSTKEYS;
    size_t at = pick(wanted, &k, 1, out, 0, cap);
    if (at == 0) /* none of the known ones is wanted: as given */
        return 0;
    at = pick(wanted, &k, 0, out, at, cap);
    out[at - 1] = '\0'; /* the last comma */
    return 1;
}
