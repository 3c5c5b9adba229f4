%% Erlang/OTP side of scripts/bench: the same workloads as the Python runtimes.
%%
%% Run by scripts/bench as
%%   erl -noshell +S 2 -pa DIR -run bench main WORKLOAD N REPS
%% Prints one line per repetition: RESULT {json}, then halts.
%% The module is its own gen_server (echo, restart child) and supervisor callback module;
%% init/1 tells them apart by its argument, so no -behaviour attribute is declared.
-module(bench).
-export([main/1]).
-export([init/1, handle_call/3, handle_cast/2]).

main([Workload, NStr, RepsStr]) ->
    %% Reports of the killed children would cost time inside the measurement.
    logger:set_primary_config(level, none),
    N = list_to_integer(NStr),
    Reps = list_to_integer(RepsStr),
    W = list_to_atom(Workload),
    lists:foreach(
      fun(_) -> io:format("RESULT ~s~n", [json(run(W, N))]) end,
      lists:seq(1, Reps)),
    halt(0).

%% ------------------------------------------------------------------ workloads

run(pingpong, N) ->
    Pong = spawn(fun pong/0),
    T0 = now_ns(),
    ping(Pong, N),
    T = now_ns() - T0,
    exit(Pong, kill),
    [{rate, N / secs(T)}];
run(ring, N) ->
    Me = self(),
    Nodes = [spawn(fun() -> ring_init(Me) end) || _ <- lists:seq(1, 1000)],
    lists:foreach(fun({P, Next}) -> P ! {next, Next} end,
                  lists:zip(Nodes, tl(Nodes) ++ [hd(Nodes)])),
    T0 = now_ns(),
    hd(Nodes) ! N,
    receive done -> ok end,
    T = now_ns() - T0,
    [exit(P, kill) || P <- Nodes],
    [{rate, N / secs(T)}];
run(spawn, N) ->
    T0 = now_ns(),
    spawn_noops(N),
    collect_downs(N),
    [{rate, N / secs(now_ns() - T0)}];
run(memory, N) ->
    erlang:garbage_collect(),
    Before = rss(),
    spawn_idle(N),
    wait_idle(),
    [erlang:garbage_collect(P) || P <- processes()],
    After = rss(),
    [{bytes, (After - Before) / N}, {n, N}];
run(call, N) ->
    {ok, S} = gen_server:start(?MODULE, echo, []),
    Samples = [timed_call(S) || _ <- lists:seq(1, N + N div 10)],
    gen_server:stop(S),
    percentiles(lists:nthtail(N div 10, Samples)) ++ [{label, <<"gen_server:call">>}];
run(restart, N) ->
    Me = self(),
    {ok, Sup} = supervisor:start_link(?MODULE, {sup, Me, N}),
    Pid0 = receive {started, P0} -> P0 end,
    {Samples, _} = lists:mapfoldl(
                     fun(_, Pid) ->
                             T0 = now_ns(),
                             exit(Pid, kill),
                             New = receive {started, P} -> P end,
                             ping = gen_server:call(New, ping),
                             {now_ns() - T0, New}
                     end, Pid0, lists:seq(1, N)),
    unlink(Sup),
    exit(Sup, kill),
    percentiles(Samples).

%% ------------------------------------------------------------------ processes

ping(_, 0) -> ok;
ping(Pong, N) ->
    Pong ! {ping, self()},
    receive pong -> ok end,
    ping(Pong, N - 1).

pong() ->
    receive {ping, From} -> From ! pong, pong() end.

ring_init(Main) ->
    receive {next, Next} -> ring_loop(Main, Next) end.

ring_loop(Main, Next) ->
    receive
        0 -> Main ! done, ring_loop(Main, Next);
        Hops -> Next ! Hops - 1, ring_loop(Main, Next)
    end.

spawn_noops(0) -> ok;
spawn_noops(N) -> spawn_monitor(fun() -> ok end), spawn_noops(N - 1).

collect_downs(0) -> ok;
collect_downs(N) -> receive {'DOWN', _, process, _, _} -> collect_downs(N - 1) end.

spawn_idle(0) -> ok;
spawn_idle(N) -> spawn(fun() -> receive stop -> ok end end), spawn_idle(N - 1).

%% Every idle process has run up to its receive once the run queues are empty.
wait_idle() ->
    case erlang:statistics(total_run_queue_lengths_all) of
        0 -> ok;
        _ -> timer:sleep(10), wait_idle()
    end.

timed_call(S) ->
    T0 = now_ns(),
    ping = gen_server:call(S, ping),
    now_ns() - T0.

%% ------------------------------------------------------------------ callbacks

init(echo) -> {ok, echo};
init({child, Bench}) -> Bench ! {started, self()}, {ok, child};
init({sup, Bench, N}) ->
    Flags = #{strategy => one_for_one, intensity => 2 * N + 10, period => 3600},
    Child = #{id => c,
              start => {gen_server, start_link, [?MODULE, {child, Bench}, []]},
              restart => permanent, shutdown => brutal_kill, type => worker},
    {ok, {Flags, [Child]}}.

handle_call(Req, _From, State) -> {reply, Req, State}.
handle_cast(_Msg, State) -> {noreply, State}.

%% ------------------------------------------------------------------ helpers

now_ns() -> erlang:monotonic_time(nanosecond).

secs(Ns) -> Ns / 1.0e9.

%% The same figure psutil reports as rss (VmRSS), read from this OS process.
rss() ->
    {ok, Bin} = file:read_file("/proc/self/status"),
    [Line] = [L || L <- binary:split(Bin, <<"\n">>, [global]),
                   binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kb | _] = binary:split(Line, [<<" ">>, <<"\t">>], [global, trim_all]),
    binary_to_integer(Kb) * 1024.

percentiles(Samples) ->
    S = lists:sort(Samples),
    Len = length(S),
    [{median_us, lists:nth(Len div 2 + 1, S) / 1000},
     {p99_us, lists:nth(min(Len, (Len * 99) div 100 + 1), S) / 1000}].

json(Pairs) ->
    Items = [io_lib:format("\"~s\": ~s", [K, value(V)]) || {K, V} <- Pairs],
    ["{", lists:join(", ", Items), "}"].

value(V) when is_integer(V) -> integer_to_list(V);
value(V) when is_float(V) -> float_to_list(V, [{decimals, 4}]);
value(V) when is_binary(V) -> ["\"", V, "\""].
