"""fastsrv.py ADDR PORT: a minimal HTTP/1.0 responder (asyncio), fast enough that the connection
rate benchmark measures the forwarders rather than the server."""
import asyncio, sys
async def handle(r, w):
    await r.read(1024)
    w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]), backlog=512)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
