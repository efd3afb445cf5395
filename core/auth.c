/* auth.c - the authentication state machine of one session.
 *
 * Methods are tried in the order OpenSSH uses: the agent's keys (those of the identity files
 * first; only those with IdentitiesOnly), then the identity files the agent did not hold, each
 * with its certificate first, then keyboard-interactive (answered with the password), then
 * password; only the methods the server lists. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "pkeycache.h"

/* Private keys decrypted once per process: a key with a passphrase costs ~100 ms of CPU to
 * decrypt (bcrypt KDF), which would bound logins to ~10/s. An entry is found again only for the
 * same file (path, inode, size, mtime) and the same passphrase (its SHA-256; the passphrase
 * itself is not kept). */
struct sc_keyentry {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    time_t mtime;
    unsigned char pass[32];
    ssh_key key;
    struct sc_keyentry *next;
};

/* The loop's cache, freed with the loop. */
struct sc_keycache {
    sc_cleanup cleanup;
    sc_loop *loop;
    struct sc_keyentry *entries;
};

static void pass_digest(const char *pass, unsigned char out[32])
{
    unsigned int n = 0;
    memset(out, 0, 32);
    EVP_Digest(pass ? pass : "", pass ? strlen(pass) : 0, out, &n, EVP_sha256(), NULL);
}

static struct sc_keyentry *keycache_find(sc_loop *loop, const char *path, const struct stat *st,
                                         const unsigned char pass[32])
{
    if (!loop->keys)
        return NULL;
    for (struct sc_keyentry *c = loop->keys->entries; c; c = c->next)
        if (c->dev == st->st_dev && c->ino == st->st_ino && c->size == st->st_size &&
            c->mtime == st->st_mtime && memcmp(c->pass, pass, 32) == 0 &&
            strcmp(c->path, path) == 0)
            return c;
    return NULL;
}

static void keycache_free(sc_cleanup *cl)
{
    struct sc_keycache *kc = (struct sc_keycache *)cl;
    struct sc_keyentry *c;
    while ((c = kc->entries) != NULL) {
        kc->entries = c->next;
        ssh_key_free(c->key);
        free(c->path);
        free(c);
    }
    kc->loop->keys = NULL;
    free(kc);
    sc_pkeycache_clear(); /* libcrypto's copies of the identities go with them */
}

static void keycache_add(sc_loop *loop, const char *path, const struct stat *st,
                         const unsigned char pass[32], ssh_key key)
{
    if (!loop->keys) {
        struct sc_keycache *kc = calloc(1, sizeof *kc);
        if (!kc)
            return;
        kc->loop = loop;
        kc->cleanup.run = keycache_free;
        sc_loop_at_free(loop, &kc->cleanup);
        loop->keys = kc;
    }
    struct sc_keyentry *c = calloc(1, sizeof *c);
    ssh_key copy = ssh_key_dup(key);
    if (!c || !copy || !(c->path = sc_strdup(path))) {
        free(c);
        ssh_key_free(copy);
        return;
    }
    c->dev = st->st_dev;
    c->ino = st->st_ino;
    c->size = st->st_size;
    c->mtime = st->st_mtime;
    memcpy(c->pass, pass, 32);
    c->key = copy;
    c->next = loop->keys->entries;
    loop->keys->entries = c;
}

enum { A_NONE = 0, A_PICK, A_PUBKEY, A_AGENT, A_KBDINT, A_PASSWORD };

static void note_tried(sc_auth *a, const char *what)
{
    size_t n = strlen(a->tried);
    snprintf(a->tried + n, sizeof a->tried - n, "%s%s", n ? ", " : "", what);
}

static const char *methods_text(int m, char *buf, size_t len)
{
    buf[0] = '\0';
    if (m & SSH_AUTH_METHOD_PUBLICKEY)
        strncat(buf, "publickey,", len - strlen(buf) - 1);
    if (m & SSH_AUTH_METHOD_INTERACTIVE)
        strncat(buf, "keyboard-interactive,", len - strlen(buf) - 1);
    if (m & SSH_AUTH_METHOD_PASSWORD)
        strncat(buf, "password,", len - strlen(buf) - 1);
    size_t n = strlen(buf);
    if (n)
        buf[n - 1] = '\0';
    else
        snprintf(buf, len, "none");
    return buf;
}

void sc_auth_cleanup(sc_auth *a)
{
    if (a->key) {
        ssh_key_free(a->key);
        a->key = NULL;
    }
    if (a->plain) {
        ssh_key_free(a->plain);
        a->plain = NULL;
    }
    for (int i = 0; i < a->n_certs; i++)
        ssh_key_free(a->certs[i]);
    free(a->certs);
    a->certs = NULL;
    a->n_certs = 0;
    sc_agent_relay_close(a->relay, a->ssh);
    a->relay = NULL;
}

/* The agent's socket: the spec's (IdentityAgent), else $SSH_AUTH_SOCK; NULL when none. */
static const char *agent_socket(const sc_auth *a)
{
    if (a->spec->agent_sock)
        return a->spec->agent_sock;
    const char *sock = getenv("SSH_AUTH_SOCK");
    return sock && *sock ? sock : NULL;
}

/* Whether to ask ssh-agent: unless the spec says agent=false, whenever there is one (asked or
 * not, as OpenSSH does: before the key files, and before passwords). */
static int agent_usable(const sc_auth *a) { return a->spec->agent != 0 && agent_socket(a); }

/* Loads the spec's certificates once; a file that cannot be read is noted. */
static void load_certs(sc_auth *a)
{
    if (a->certs_loaded)
        return;
    a->certs_loaded = 1;
    if (a->spec->n_certificates == 0)
        return;
    a->certs = calloc((size_t)a->spec->n_certificates, sizeof *a->certs);
    for (int i = 0; a->certs && i < a->spec->n_certificates; i++) {
        ssh_key c = NULL;
        if (ssh_pki_import_cert_file(a->spec->certificates[i], &c) == SSH_OK)
            a->certs[a->n_certs++] = c;
        else
            snprintf(a->key_problem, sizeof a->key_problem, "certificate %s: unreadable",
                     a->spec->certificates[i]);
    }
}

/* Whether cert certifies key's public half. */
static int certifies(ssh_key cert, ssh_key key)
{
    unsigned char *cb = NULL, *kb = NULL;
    size_t cl = 0, kl = 0;
    int r = sc_key_blob(cert, &cb, &cl) == 0 && sc_key_blob(key, &kb, &kl) == 0 &&
            sc_blob_certifies(cb, cl, kb, kl);
    free(cb);
    free(kb);
    return r;
}

/* A certificate for the identity at path whose key is key: "<path>-cert.pub" (as ssh), else
 * one of the spec's certificates that certifies it; NULL when there is none. Not to free. */
static ssh_key cert_for(sc_auth *a, const char *path, ssh_key key, ssh_key *owned)
{
    char p[1100];
    *owned = NULL;
    snprintf(p, sizeof p, "%s-cert.pub", path);
    ssh_key c = NULL;
    if (access(p, R_OK) == 0 && ssh_pki_import_cert_file(p, &c) == SSH_OK) {
        if (certifies(c, key)) {
            *owned = c;
            return c;
        }
        ssh_key_free(c);
    }
    load_certs(a);
    for (int i = 0; i < a->n_certs; i++)
        if (certifies(a->certs[i], key))
            return a->certs[i];
    return NULL;
}

/* With the certificate a->key has one, a->key becomes the key with it and a->plain the key
 * alone (tried next, as ssh tries both). */
static void attach_cert(sc_auth *a, const char *path)
{
    ssh_key owned = NULL;
    ssh_key cert = cert_for(a, path, a->key, &owned);
    if (!cert)
        return;
    ssh_key with = ssh_key_dup(a->key);
    if (with && ssh_pki_copy_cert_to_privkey(cert, with) == SSH_OK) {
        a->plain = a->key;
        a->key = with;
    } else {
        ssh_key_free(with);
    }
    ssh_key_free(owned);
}

/* The public key blob of each identity file, by index (its .pub, else the public half a private
 * key file carries unencrypted; len 0 when neither reads): what the agent's keys are matched
 * with. An array of spec->n_identities to free with free_blobs. */
static sc_blob *identity_blobs(sc_auth *a)
{
    int n = a->spec->n_identities;
    sc_blob *out = calloc((size_t)(n > 0 ? n : 1), sizeof *out);
    for (int i = 0; out && i < n; i++) {
        const char *path = a->spec->identities[i];
        char *pub = malloc(strlen(path) + 5);
        ssh_key k = NULL;
        if (pub) {
            sprintf(pub, "%s.pub", path);
            if (ssh_pki_import_pubkey_file(pub, &k) != SSH_OK)
                k = NULL;
            free(pub);
        }
        if (!k && ssh_pki_import_pubkey_file(path, &k) != SSH_OK)
            k = NULL;
        if (k && sc_key_blob(k, &out[i].data, &out[i].len) != 0)
            out[i].data = NULL, out[i].len = 0;
        ssh_key_free(k);
    }
    return out;
}

static void free_blobs(sc_blob *b, int n)
{
    for (int i = 0; b && i < n; i++)
        free(b[i].data);
    free(b);
}

/* Points libssh at the agent: through the relay (agent.c) when there are identity files, so that
 * their keys come first and the files the agent holds are not tried again, and IdentitiesOnly
 * keeps the others out. 0, or -1 when the agent cannot be used (noted). */
static int prepare_agent(sc_auth *a)
{
    int n = a->spec->n_identities;
    if (n == 0 && !a->spec->identities_only)
        return 0; /* libssh's own way to the agent */
    sc_blob *blobs = identity_blobs(a);
    char why[200];
    a->relay = blobs ? sc_agent_relay_open(agent_socket(a), blobs, n, a->spec->identities_only, why,
                                           sizeof why)
                     : NULL;
    if (!blobs)
        snprintf(why, sizeof why, "out of memory");
    free_blobs(blobs, n);
    if (!a->relay || ssh_set_agent_socket(a->ssh, sc_agent_relay_fd(a->relay)) != SSH_OK) {
        if (a->relay) {
            snprintf(why, sizeof why, "%s", ssh_get_error(a->ssh));
            sc_agent_relay_close(a->relay, NULL);
            a->relay = NULL;
        }
        snprintf(a->key_problem, sizeof a->key_problem, "agent: %s", why);
        return -1;
    }
    return 0;
}

/* Loads the next identity file into a->key; returns 1 if one is loaded, 0 when none is left. */
static int load_next_identity(sc_auth *a)
{
    while (a->next_identity < a->spec->n_identities) {
        int index = a->next_identity++;
        const char *path = a->spec->identities[index];
        if (a->relay && sc_agent_relay_offered(a->relay, index))
            continue; /* the agent offered this key already */
        ssh_key key = NULL;
        struct stat st;
        if (access(path, R_OK) != 0 || stat(path, &st) != 0) {
            snprintf(a->key_problem, sizeof a->key_problem, "identity %s: %s", path,
                     strerror(errno));
            continue;
        }
        unsigned char pass[32];
        pass_digest(a->spec->passphrase, pass);
        struct sc_keyentry *cached = keycache_find(a->loop, path, &st, pass);
        if (cached && (key = ssh_key_dup(cached->key)) != NULL) {
            a->key = key;
            attach_cert(a, path);
            return 1;
        }
        int rc = ssh_pki_import_privkey_file(path, a->spec->passphrase ? a->spec->passphrase : "",
                                             NULL, NULL, &key);
        if (rc == SSH_OK)
            keycache_add(a->loop, path, &st, pass, key);
        if (rc != SSH_OK) {
            snprintf(a->key_problem, sizeof a->key_problem,
                     a->spec->passphrase ? "identity %s: wrong passphrase or unreadable key"
                                         : "identity %s: needs a passphrase or is unreadable",
                     path);
            continue;
        }
        a->key = key;
        attach_cert(a, path);
        return 1;
    }
    return 0;
}

static int auth_fail(sc_auth *a, sc_err *err)
{
    char m[100];
    sc_err_format(err, SC_EAUTH, a->label, a->hop, "auth", "denied",
                  "permission denied (server accepts %s; tried %s)%s%s",
                  methods_text(a->methods, m, sizeof m), a->tried[0] ? a->tried : "nothing",
                  a->key_problem[0] ? "; " : "", a->key_problem);
    return -1;
}

/* The server hung up (a disconnect such as "Too many authentication failures"): libssh may go
 * on answering AGAIN for a session that is gone. */
static int server_gone(const sc_auth *a)
{
    return !ssh_is_connected(a->ssh) || (ssh_get_status(a->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR));
}

static int auth_error(sc_auth *a, sc_err *err)
{
    const char *e = ssh_get_error(a->ssh);
    if (e && strstr(e, "Too many authentication failures")) { /* sshd's MaxAuthTries */
        char m[100];
        sc_err_format(err, SC_EAUTH, a->label, a->hop, "auth", "denied",
                      "permission denied: too many authentication failures (sshd's MaxAuthTries; "
                      "server accepts %s; tried %s)",
                      methods_text(a->methods, m, sizeof m), a->tried[0] ? a->tried : "nothing");
        return -1;
    }
    sc_err_format(err, SC_ECONNECT, a->label, a->hop, "auth", "lost", "%s",
                  e && *e ? e : "connection lost");
    return -1;
}

int sc_auth_step(sc_auth *a, sc_err *err)
{
    for (;;) {
        int rc;
        switch (a->phase) {
        case A_NONE:
            rc = ssh_userauth_none(a->ssh, NULL);
            if (rc == SSH_AUTH_AGAIN && server_gone(a))
                return auth_error(a, err);
            if (rc == SSH_AUTH_AGAIN)
                return 0;
            if (rc == SSH_AUTH_SUCCESS) {
                a->method = "none";
                return 1;
            }
            if (rc == SSH_AUTH_ERROR)
                return auth_error(a, err);
            a->methods = ssh_userauth_list(a->ssh, NULL);
            methods_text(a->methods, a->offered, sizeof a->offered);
            a->phase = A_PICK;
            break;

        case A_PICK:
            if ((a->methods & SSH_AUTH_METHOD_PUBLICKEY) && !a->agent_tried && agent_usable(a)) {
                a->agent_tried = 1; /* the agent first, as ssh */
                if (prepare_agent(a) == 0) {
                    note_tried(a, "agent");
                    a->phase = A_AGENT;
                }
            } else if ((a->methods & SSH_AUTH_METHOD_PUBLICKEY) && a->plain) {
                a->key = a->plain; /* the certificate was refused: the key alone */
                a->plain = NULL;
                note_tried(a, "publickey");
                a->phase = A_PUBKEY;
            } else if ((a->methods & SSH_AUTH_METHOD_PUBLICKEY) && load_next_identity(a)) {
                note_tried(a, a->plain ? "publickey (certificate)" : "publickey");
                a->phase = A_PUBKEY;
            } else if (a->spec->password && (a->methods & SSH_AUTH_METHOD_INTERACTIVE) &&
                       !a->kbd_tried) {
                a->kbd_tried = 1;
                note_tried(a, "keyboard-interactive");
                a->phase = A_KBDINT;
            } else if (a->spec->password && (a->methods & SSH_AUTH_METHOD_PASSWORD) &&
                       !a->pw_tried) {
                a->pw_tried = 1;
                note_tried(a, "password");
                a->phase = A_PASSWORD;
            } else {
                return auth_fail(a, err);
            }
            break;

        case A_PUBKEY:
        case A_AGENT:
        case A_KBDINT:
        case A_PASSWORD:
            if (a->phase == A_PUBKEY)
                rc = ssh_userauth_publickey(a->ssh, NULL, a->key);
            else if (a->phase == A_AGENT)
                rc = ssh_userauth_agent(a->ssh, NULL);
            else if (a->phase == A_PASSWORD)
                rc = ssh_userauth_password(a->ssh, NULL, a->spec->password);
            else {
                rc = ssh_userauth_kbdint(a->ssh, NULL, NULL);
                if (rc == SSH_AUTH_INFO) {
                    if (++a->kbd_rounds > 5) {
                        rc = SSH_AUTH_DENIED;
                    } else {
                        int n = ssh_userauth_kbdint_getnprompts(a->ssh);
                        for (int i = 0; i < n; i++)
                            ssh_userauth_kbdint_setanswer(a->ssh, (unsigned)i, a->spec->password);
                        continue; /* send the answers */
                    }
                }
            }
            if (rc == SSH_AUTH_AGAIN && server_gone(a))
                return auth_error(a, err);
            if (rc == SSH_AUTH_AGAIN)
                return 0;
            if (rc == SSH_AUTH_SUCCESS) {
                static const char *const names[] = {[A_PUBKEY] = "publickey",
                                                    [A_AGENT] = "agent",
                                                    [A_KBDINT] = "keyboard-interactive",
                                                    [A_PASSWORD] = "password"};
                a->method = names[a->phase];
                return 1;
            }
            if (rc == SSH_AUTH_ERROR)
                return auth_error(a, err);
            if (a->key) {
                ssh_key_free(a->key);
                a->key = NULL;
            }
            /* denied, or partial success: the server tells what it wants next */
            a->methods = ssh_userauth_list(a->ssh, NULL);
            a->phase = A_PICK;
            break;
        }
    }
}
