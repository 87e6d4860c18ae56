"""Peak RSS of a control-service under floods: 400 oversized (1 MiB) Login
requests at once, then 2 000 ListBans pages of 1 000 rows at once, over 4
connections. Usage: limits_flood.py ADDR PID PASSWORD STUBS_DIR"""
import sys, time, grpc
sys.path.insert(0, sys.argv[4])  # stubs made as in bench/transport.sh
from bangui.control.v1 import auth_pb2, auth_pb2_grpc, history_pb2, history_pb2_grpc
addr, pid, password = sys.argv[1], sys.argv[2], sys.argv[3]
def hwm():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith(('VmHWM', 'VmRSS')): print(' ', l.strip())
opts=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
chans=[grpc.insecure_channel(addr, options=opts) for _ in range(4)]
for c in chans: grpc.channel_ready_future(c).result(timeout=10)
print('start'); hwm()
# 1) 400 oversized (1 MiB) Login requests at once on 4 connections
big = auth_pb2.LoginRequest(password='x'*(1<<20))
t=time.time(); futs=[auth_pb2_grpc.AuthServiceStub(chans[i%4]).Login.future(big, timeout=30) for i in range(400)]
codes={}
for f in futs:
    try: f.result(); codes['OK']=codes.get('OK',0)+1
    except grpc.RpcError as e: codes[e.code().name]=codes.get(e.code().name,0)+1
print('400 x 1 MiB Login:', codes, f'{time.time()-t:.2f}s'); hwm()
# 2) 2000 concurrent authenticated ListBans pages of 1000 on 4 connections
tok=auth_pb2_grpc.AuthServiceStub(chans[0]).Login(auth_pb2.LoginRequest(password=password)).token
md=[('authorization', f'Bearer {tok}')]
req=history_pb2.ListBansRequest(filter=history_pb2.HistoryFilter(window=history_pb2.WINDOW_ALL), page_size=1000)
t=time.time(); futs=[history_pb2_grpc.HistoryServiceStub(chans[i%4]).ListBans.future(req, metadata=md, timeout=60) for i in range(2000)]
codes={}
for f in futs:
    try: f.result(); codes['OK']=codes.get('OK',0)+1
    except grpc.RpcError as e: codes[e.code().name]=codes.get(e.code().name,0)+1
print('2000 x ListBans(1000) at once:', codes, f'{time.time()-t:.2f}s'); hwm()
hs=auth_pb2_grpc.AuthServiceStub(chans[0]).GetSetupStatus(auth_pb2.GetSetupStatusRequest()); print('after: answers', hs.password_set)
