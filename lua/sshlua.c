/* sshlua.c - the standalone interpreter: lua5.4 with the sshchain module built in.
 * Shaped like Lua's own lua.c: main only creates the state and runs pmain under pcall; options are
 * parsed before any Lua runs; every chunk goes through docall with a traceback handler; SIGINT
 * only sets a hook (and stops the event loop); errors print as "sshlua: message". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define PROGNAME       "sshlua"
#define SSHLUA_VERSION "sshlua 0.1.0 (sshchain; " LUA_RELEASE ")"
#define INIT_VAR       "SSHLUA_INIT"

int luaopen_sshchain(lua_State *L);
void sc_interrupt(void);

static lua_State *globalL = NULL;
static const char *progname = PROGNAME;

/* The hook that Ctrl-C sets: raises sshchain's interruption value when the module is loaded
 * (scripts and recipes recognize it without reading text), else lua.c's "interrupted!". */
static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (lua_getfield(L, LUA_REGISTRYINDEX, "sshchain.interrupted") != LUA_TNIL)
        lua_error(L);
    lua_pop(L, 1);
    luaL_error(L, "interrupted!");
}

static void laction(int sig)
{
    signal(sig, SIG_DFL); /* a second Ctrl-C kills */
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    sc_interrupt(); /* a wait in the event loop returns, so the hook runs */
}

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: %s [options] [script [args]]\n"
            "Available options are:\n"
            "  -e stat   execute string 'stat'\n"
            "  -i        enter interactive mode after executing 'script'\n"
            "  -l mod    require library 'mod' into global 'mod'\n"
            "  -l g=mod  require library 'mod' into global 'g'\n"
            "  -r name   run the bundled recipe 'name' with the remaining arguments\n"
            "            (-r alone lists the recipes)\n"
            "  -G [-F file] [-l user] [-p port] host\n"
            "            print host's effective ssh_config, as ssh -G does\n"
            "  -v        with a script, -e, -r or -G: say what each connect does (-vv, -vvv:\n"
            "            more; libssh's own log at -vvv); alone: show version information\n"
            "  -V        show version information\n"
            "  -E        ignore environment variables\n"
            "  -W        turn warnings on\n"
            "  --        stop handling options\n"
            "  -         stop handling options and execute stdin\n"
            "  -h, --help  show this help (sshlua -r NAME --help: a recipe's)\n"
            "The module is built in: require \"sshchain\" (README.md has the API).\n",
            progname);
}

static void print_usage(const char *badoption)
{
    if (badoption[1] == 'e' || badoption[1] == 'l' || badoption[1] == 'r')
        fprintf(stderr, "%s: '%s' needs argument\n", progname, badoption);
    else
        fprintf(stderr, "%s: unrecognized option '%s'\n", progname, badoption);
    print_help(stderr);
}

static void l_message(const char *pname, const char *msg)
{
    if (pname)
        fprintf(stderr, "%s: ", pname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (!msg)
            msg = "(error object is not a string)";
        l_message(progname, msg);
        lua_pop(L, 1);
    }
    return status;
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs the function on the stack under the traceback handler, with SIGINT armed. */
static int docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    globalL = L;
    signal(SIGINT, laction);
    int status = lua_pcall(L, narg, nres, base);
    signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    return status;
}

static void print_version(void)
{
    printf("%s\n", SSHLUA_VERSION);
    fflush(stdout);
}

/* arg table: script at 0, its arguments 1.., the interpreter and options at negative indices. */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
    if (script == argc)
        script = 0;
    lua_createtable(L, argc - (script + 1), script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK)
        status = docall(L, 0, 0);
    return report(L, status);
}

static int dofile(lua_State *L, const char *name) { return dochunk(L, luaL_loadfile(L, name)); }

static int dostring(lua_State *L, const char *s, const char *name)
{
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l: require mod and set global g (mod's name, or the part before '='). */
static int dolibrary(lua_State *L, char *globname)
{
    char *modname = strchr(globname, '=');
    if (modname == NULL) {
        modname = globname;
        char *dash = strchr(globname, '-');
        if (dash)
            *dash = '\0';
    } else {
        *modname = '\0';
        modname++;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, modname);
    int status = docall(L, 1, 1);
    if (status == LUA_OK)
        lua_setglobal(L, globname);
    return report(L, status);
}

static int pushargs(lua_State *L)
{
    if (lua_getglobal(L, "arg") != LUA_TTABLE)
        luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    int i;
    for (i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -i);
    return n;
}

static int handle_script(lua_State *L, char **argv)
{
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
        fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = docall(L, n, LUA_MULTRET);
    }
    return report(L, status);
}

/* -r NAME: the recipe is the embedded module "sshchain.recipes", which finds and runs NAME;
 * -G: "sshchain.config" prints a host's effective ssh_config. Loading "sshchain" first registers
 * the embedded modules. */
static int handle_main(lua_State *L, const char *module, const char *func, char **argv, int argc,
                       int at)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sshchain");
    int status = docall(L, 1, 0);
    if (status != LUA_OK)
        return report(L, status);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    status = docall(L, 1, 1);
    if (status != LUA_OK)
        return report(L, status);
    lua_getfield(L, -1, func);
    lua_remove(L, -2);
    lua_createtable(L, argc - at, 0);
    for (int i = at; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - at + 1);
    }
    status = docall(L, 1, 1);
    if (status != LUA_OK)
        return report(L, status);
    int code = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return code == 0 ? LUA_OK : -code; /* a recipe's failing exit status */
}

#define has_error 1
#define has_i     2
#define has_v     4
#define has_e     8
#define has_E     16
#define has_r     32
#define has_help  64
#define has_G     128
#define has_V     256

static int verbosity; /* -v, -vv, -vvv: sshchain.log's level for a script, recipe or -G */

/* Scans options; returns the flags and sets *first to the script's (or -r's) index. */
static int collectargs(char **argv, int *first)
{
    int args = 0;
    int i;
    if (argv[0] != NULL) {
        if (argv[0][0])
            progname = PROGNAME;
    } else {
        *first = -1;
        return 0;
    }
    for (i = 1; argv[i] != NULL; i++) {
        *first = i;
        if (argv[i][0] != '-')
            return args;
        switch (argv[i][1]) {
        case '-':
            if (strcmp(argv[i], "--help") == 0)
                return has_help;
            if (argv[i][2] != '\0')
                return has_error;
            *first = i + 1;
            return args;
        case '\0':
            return args;
        case 'E':
            if (argv[i][2] != '\0')
                return has_error;
            args |= has_E;
            break;
        case 'h':
            return argv[i][2] == '\0' ? has_help : has_error;
        case 'W':
            if (argv[i][2] != '\0')
                return has_error;
            break;
        case 'i':
            if (argv[i][2] != '\0')
                return has_error;
            args |= has_i | has_V; /* (-i implies the version, as lua -i) */
            break;
        case 'v': /* -v, -vv, -vvv */
            if (strspn(argv[i] + 1, "v") != strlen(argv[i] + 1) || strlen(argv[i]) > 4)
                return has_error;
            verbosity += (int)strlen(argv[i]) - 1;
            args |= has_v;
            break;
        case 'V':
            if (argv[i][2] != '\0')
                return has_error;
            args |= has_V;
            break;
        case 'e':
            args |= has_e;
            /* fallthrough */
        case 'l':
            if (argv[i][2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-')
                    return has_error;
            }
            break;
        case 'r':
            if (argv[i][2] != '\0')
                return has_error;
            *first = i;
            return args | has_r;
        case 'G':
            if (argv[i][2] != '\0')
                return has_error;
            *first = i;
            return args | has_G;
        default:
            return has_error;
        }
    }
    *first = i;
    return args;
}

static int runargs(lua_State *L, char **argv, int n)
{
    for (int i = 1; i < n; i++) {
        int option = argv[i][1];
        switch (option) {
        case 'e':
        case 'l': {
            char *extra = argv[i] + 2;
            if (*extra == '\0')
                extra = argv[++i];
            int status =
                (option == 'e') ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
            if (status != LUA_OK)
                return 0;
            break;
        }
        case 'W':
            lua_warning(L, "@on", 0);
            break;
        }
    }
    return 1;
}

static int handle_luainit(lua_State *L)
{
    const char *name = "=" INIT_VAR;
    const char *init = getenv(INIT_VAR);
    if (init == NULL)
        return LUA_OK;
    if (init[0] == '@')
        return dofile(L, init + 1);
    return dostring(L, init, name);
}

/* REPL */

#define MAXINPUT 4096

static const char *get_prompt(lua_State *L, int firstline)
{
    if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL)
        return firstline ? "> " : ">> ";
    const char *p = luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return p;
}

static int incomplete(lua_State *L, int status)
{
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        const char *eof = "<eof>";
        size_t leof = strlen(eof);
        if (lmsg >= leof && strcmp(msg + lmsg - leof, eof) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

static int pushline(lua_State *L, int firstline)
{
    char buffer[MAXINPUT];
    const char *prmt = get_prompt(L, firstline);
    fputs(prmt, stdout);
    fflush(stdout);
    lua_pop(L, 1);
    if (fgets(buffer, MAXINPUT, stdin) == NULL)
        return 0;
    size_t l = strlen(buffer);
    if (l > 0 && buffer[l - 1] == '\n')
        buffer[--l] = '\0';
    if (firstline && buffer[0] == '=')
        lua_pushfstring(L, "return %s", buffer + 1);
    else
        lua_pushlstring(L, buffer, l);
    return 1;
}

static int addreturn(lua_State *L)
{
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK)
        lua_remove(L, -2);
    else
        lua_pop(L, 2);
    return status;
}

static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status) || !pushline(L, 0))
            return status;
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

static int loadline(lua_State *L)
{
    lua_settop(L, 0);
    if (!pushline(L, 1))
        return -1;
    int status = addreturn(L);
    if (status != LUA_OK)
        status = multiline(L);
    lua_remove(L, 1);
    return status;
}

static void l_print(lua_State *L)
{
    int n = lua_gettop(L);
    if (n > 0) {
        luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
        lua_getglobal(L, "print");
        lua_insert(L, 1);
        if (lua_pcall(L, n, 0, 0) != LUA_OK)
            l_message(progname,
                      lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
    }
}

static void doREPL(lua_State *L)
{
    int status;
    const char *oldprogname = progname;
    progname = NULL;
    while ((status = loadline(L)) != -1) {
        if (status == LUA_OK)
            status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK)
            l_print(L);
        else
            report(L, status);
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
    progname = oldprogname;
}

static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script = 0;
    int args = collectargs(argv, &script);
    int optlim = (script > 0) ? script : argc;
    luaL_checkversion(L);
    if (args == has_error) {
        print_usage(argv[script]);
        return 0;
    }
    if (args == has_help) {
        print_help(stdout);
        lua_pushboolean(L, 1);
        return 1;
    }
    int runs = (args & (has_r | has_G | has_e)) || (script > 0 && script < argc);
    if ((args & has_V) || ((args & has_v) && !runs))
        print_version(); /* -v alone: the version, as lua -v */
    if ((args & has_v) && runs) {
        char level[16];
        snprintf(level, sizeof level, "%d", verbosity > 3 ? 3 : verbosity);
        setenv("SSHCHAIN_DEBUG", level, 1);
    }
    if (args & has_E) {
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_sshchain);
    lua_setfield(L, -2, "sshchain");
    lua_pop(L, 1);
    createargtable(L, argv, argc, (args & (has_r | has_G)) ? script + 1 : script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    if (!(args & has_E)) {
        if (handle_luainit(L) != LUA_OK)
            return 0;
    }
    if (!runargs(L, argv, optlim))
        return 0;
    if (args & (has_r | has_G)) {
        int st = (args & has_r)
                     ? handle_main(L, "sshchain.recipes", "main", argv, argc, script + 1)
                     : handle_main(L, "sshchain.config", "main_G", argv, argc, script + 1);
        if (st != LUA_OK) {
            lua_pushinteger(L, st < 0 ? -st : 1);
            lua_setfield(L, LUA_REGISTRYINDEX, "SSHLUA_EXIT");
            return 0;
        }
    } else if (script > 0 && script < argc) {
        if (handle_script(L, argv + script) != LUA_OK)
            return 0;
    }
    if (args & has_i) {
        doREPL(L);
    } else if (script == argc && !(args & (has_e | has_v | has_V | has_r | has_G))) {
        if (isatty(0)) {
            print_version();
            doREPL(L);
        } else {
            dofile(L, NULL);
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        l_message(argv[0], "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_gc(L, LUA_GCSTOP);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int result = lua_toboolean(L, -1);
    report(L, status);
    int code = (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
    if (lua_getfield(L, LUA_REGISTRYINDEX, "SSHLUA_EXIT") == LUA_TNUMBER)
        code = (int)lua_tointeger(L, -1);
    lua_close(L);
    return code;
}
