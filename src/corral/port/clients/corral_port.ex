defmodule Corral.Port do
  @moduledoc """
  A GenServer that owns one corral worker: a Python handler run as
  `python -m corral.port --erlang module:Handler` behind an Erlang port.

  Shipped inside the corral Python package; `python -m corral.port --clients-dir` prints
  the directory that holds this file. Copy it into your project's `lib/` (or compile it
  with `elixirc`). docs/ports.md has the term mapping and a full example.

      {:ok, pid} = Corral.Port.start_link("mymodels.ranker:Ranker",
                                          env: [{"PYTHONPATH", "/srv/models"}])
      {:ok, scores} = Corral.Port.call(pid, {:rank, [1.0, 2.0]})
      {:error, {type, message, traceback}} = Corral.Port.call(pid, :bad_request)
      :ok = Corral.Port.cast(pid, {:feedback, 3})

  Replies: `{:ok, result}`; `{:error, {type, message, traceback}}` (three binaries) when
  the handler raised; `{:error, :timeout}` when no reply came within the timeout (a late
  reply is dropped); `{:error, {:port_exited, status}}` for the calls in flight when the
  worker exits. The worker exiting for any reason (a crash, SIGKILL, the OOM killer, a
  failed setup: status 2) stops the server with reason `{:port_exited, status}` (128 + N
  for signal N), an exit signal its links and its supervisor see. Stopping the server
  sends the worker `:stop` (its `terminate()` runs), then kills it after `:stop_timeout`.

  Options (a keyword list):

    * `:python` - the interpreter, a path or a name on PATH (`"python3"`)
    * `:env` - extra environment variables for the worker, `[{name, value}]` strings
    * `:cd` - the worker's working directory
    * `:timeout` - `call/2`'s timeout, ms or `:infinity` (5000)
    * `:stop_timeout` - how long a stopping worker gets before SIGKILL, ms (5000)
    * `:max_frame_size` - the worker's `--max-frame-size`, bytes (its default: 64 MiB)
    * `:spin` - the worker's `--spin`, seconds it polls before blocking (0)
    * `:crash_on_error` - the worker exits (status 1) when the handler raises (false)
    * `:name` - registers the server, as `GenServer.start_link/3` does
  """
  use GenServer

  @options [:python, :env, :cd, :timeout, :stop_timeout, :max_frame_size, :spin, :crash_on_error]

  @doc """
  A child spec for `{Corral.Port, {handler, opts}}` in a supervisor's children; the child's
  id is `opts[:name]` when given, else `Corral.Port`.
  """
  def child_spec({handler, opts}) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [handler, opts]}
    }
  end

  @doc "Starts a worker for `handler` (`\"module:Attr\"`), linked to the caller."
  def start_link(handler, opts \\ []) do
    {name, opts} = Keyword.pop(opts, :name)
    GenServer.start_link(__MODULE__, {handler, opts}, if(name, do: [name: name], else: []))
  end

  @doc "Calls the handler's `handle_call(term)`; `timeout` in ms, or the server's default."
  def call(server, term, timeout \\ :default) do
    GenServer.call(server, {:call, term, timeout}, :infinity)
  end

  @doc "The handler's `handle_cast(term)`; no reply."
  def cast(server, term), do: GenServer.cast(server, {:cast, term})

  @doc "Stops the worker gracefully (its `terminate()` runs) and the server."
  def stop(server), do: GenServer.stop(server)

  @doc "The worker's OS process id."
  def os_pid(server), do: GenServer.call(server, :os_pid)

  # --- GenServer -------------------------------------------------------------------------

  @impl true
  def init({handler, opts}) do
    Process.flag(:trap_exit, true)

    with :ok <- check_handler(handler),
         {:ok, o} <- options(opts) do
      open(handler, o)
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call({:call, term, timeout}, from, s) do
    timeout = if timeout == :default, do: s.timeout, else: timeout
    ref = make_ref()
    # A closed port raises; its exit_status message is on its way and stops us.
    command(s.port, {:call, ref, term})

    timer =
      if timeout == :infinity,
        do: nil,
        else: Process.send_after(self(), {:call_timeout, ref}, timeout)

    {:noreply, %{s | pending: Map.put(s.pending, ref, {from, timer})}}
  end

  def handle_call(:os_pid, _from, s), do: {:reply, s.os_pid, s}

  @impl true
  def handle_cast({:cast, term}, s) do
    command(s.port, {:cast, term})
    {:noreply, s}
  end

  @impl true
  def handle_info({port, {:data, bin}}, %{port: port} = s) do
    case :erlang.binary_to_term(bin) do
      {:reply, ref, result} when is_reference(ref) -> {:noreply, answer(ref, {:ok, result}, s)}
      {:error, ref, error} when is_reference(ref) -> {:noreply, answer(ref, {:error, error}, s)}
      other -> {:stop, {:unexpected_term_from_worker, other}, s}
    end
  end

  def handle_info({:call_timeout, ref}, s) do
    case Map.pop(s.pending, ref) do
      {{from, _timer}, rest} ->
        GenServer.reply(from, {:error, :timeout})
        {:noreply, %{s | pending: rest}}

      {nil, _} ->
        {:noreply, s}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = s) do
    reason = {:port_exited, status}
    {:stop, reason, fail_pending({:error, reason}, %{s | port: nil})}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = s) do
    # The port closed without an exit status (killed from Erlang): as good as exited.
    reason = {:port_closed, reason}
    {:stop, reason, fail_pending({:error, reason}, %{s | port: nil})}
  end

  def handle_info({:EXIT, _from, reason}, s), do: {:stop, reason, s}
  def handle_info(_ignored, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, %{port: nil}), do: :ok

  def terminate(_reason, %{port: port} = s) do
    command(port, :stop)

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      s.stop_timeout ->
        :os.cmd(~c"kill -KILL #{s.os_pid}")

        receive do
          {^port, {:exit_status, _}} -> :ok
        after
          5000 -> :ok
        end
    end

    try do
      Port.close(port)
    rescue
      ArgumentError -> :ok
    end

    :ok
  end

  # --- internals -------------------------------------------------------------------------

  defp open(handler, o) do
    case python(o.python) do
      nil ->
        {:stop, {:invalid_option, :python, "an executable on PATH or a path", o.python}}

      python ->
        args = ["-m", "corral.port", "--erlang"] ++ flags(o) ++ [to_string(handler)]
        env = for {k, v} <- o.env, do: {to_charlist(k), to_charlist(v)}

        port_opts =
          [{:packet, 4}, :binary, :exit_status, :use_stdio, {:args, args}, {:env, env}] ++
            if(Map.has_key?(o, :cd), do: [{:cd, to_charlist(o.cd)}], else: [])

        try do
          port = Port.open({:spawn_executable, python}, port_opts)
          {:os_pid, os_pid} = Port.info(port, :os_pid)

          {:ok,
           %{
             port: port,
             os_pid: os_pid,
             timeout: o.timeout,
             stop_timeout: o.stop_timeout,
             pending: %{}
           }}
        rescue
          error -> {:stop, {:open_port_failed, python, error}}
        end
    end
  end

  defp command(nil, _term), do: :ok

  defp command(port, term) do
    Port.command(port, :erlang.term_to_binary(term))
  rescue
    ArgumentError -> :ok
  end

  defp answer(ref, reply, s) do
    case Map.pop(s.pending, ref) do
      {{from, timer}, rest} ->
        cancel(timer)
        GenServer.reply(from, reply)
        %{s | pending: rest}

      {nil, _} ->
        # its caller had its {:error, :timeout} already
        s
    end
  end

  defp fail_pending(reply, s) do
    for {_ref, {from, timer}} <- s.pending do
      cancel(timer)
      GenServer.reply(from, reply)
    end

    %{s | pending: %{}}
  end

  defp cancel(nil), do: :ok
  defp cancel(timer), do: Process.cancel_timer(timer, async: true, info: false)

  defp python(name) do
    name = to_string(name)
    if String.contains?(name, "/"), do: name, else: System.find_executable(name)
  end

  defp flags(o) do
    for(
      {key, flag} <- [max_frame_size: "--max-frame-size", spin: "--spin"],
      Map.has_key?(o, key),
      part <- [flag, to_string(Map.fetch!(o, key))],
      do: part
    ) ++ if(o.crash_on_error, do: ["--crash-on-error"], else: [])
  end

  defp check_handler(handler) do
    if text?(handler),
      do: :ok,
      else: {:error, {:invalid_handler, "a \"module:Attr\" string", handler}}
  end

  defp options(opts) when is_list(opts) do
    defaults = %{
      python: "python3",
      env: [],
      timeout: 5000,
      stop_timeout: 5000,
      crash_on_error: false
    }

    Enum.reduce_while(opts, {:ok, defaults}, fn
      {key, value}, {:ok, o} when key in @options ->
        case valid(key, value) do
          true -> {:cont, {:ok, Map.put(o, key, value)}}
          rule -> {:halt, {:error, {:invalid_option, key, rule, value}}}
        end

      {key, _value}, _ ->
        {:halt, {:error, {:unknown_option, key, @options}}}

      other, _ ->
        {:halt, {:error, {:invalid_options, "a keyword list", other}}}
    end)
  end

  defp options(opts), do: {:error, {:invalid_options, "a keyword list", opts}}

  defp valid(:python, v), do: text?(v) || "a non-empty string"

  defp valid(:env, v) do
    (is_list(v) and Enum.all?(v, &match?({k, x} when is_binary(k) and is_binary(x), &1))) ||
      "a list of {name, value} strings"
  end

  defp valid(:cd, v), do: text?(v) || "a non-empty string"

  defp valid(:timeout, v) do
    v == :infinity or (is_integer(v) and v >= 0) || "an integer >= 0 (ms) or :infinity"
  end

  defp valid(:stop_timeout, v), do: (is_integer(v) and v >= 0) || "an integer >= 0 (ms)"
  defp valid(:max_frame_size, v), do: (is_integer(v) and v >= 1) || "an integer >= 1 (bytes)"
  defp valid(:spin, v), do: (is_number(v) and v >= 0) || "a number >= 0 (seconds)"
  defp valid(:crash_on_error, v), do: is_boolean(v) || "a boolean"

  defp text?(v), do: is_binary(v) and v != ""
end
