# Drives a real corral worker through the shipped Elixir client, Corral.Port (a GenServer).
# Run: elixir -r CLIENTS_DIR/corral_port.ex corral_port_client_test.exs PYTHON PYTHONPATH
# Prints one "ok NAME" line per check, or "FAIL NAME ..." and halts with status 1.
defmodule CorralPortClientTest do
  def run([python, python_path]) do
    Process.flag(:trap_exit, true)
    opts = [python: python, env: [{"PYTHONPATH", python_path}]]
    {:ok, pid} = Corral.Port.start_link("port_handlers:Echo", opts)
    msg = {:predict, [1.0, 2.5], %{"k" => 1}, :undefined}
    check(:call, Corral.Port.call(pid, msg), {:ok, msg})
    :ok = Corral.Port.cast(pid, :hello)
    check(:cast, Corral.Port.call(pid, [:casts], 20_000), {:ok, [:hello]})

    check(
      :call_error,
      error_parts(Corral.Port.call(pid, [:raise, :"bad input"])),
      {"ValueError", "bad input", "ValueError: bad input\n"}
    )

    # The handler sleeps past the timeout: {:error, :timeout}; its late reply is dropped.
    check(:call_timeout, Corral.Port.call(pid, [:sleep, 0.3], 10), {:error, :timeout})
    check(:after_timeout, Corral.Port.call(pid, 42, 20_000), {:ok, 42})
    :os.cmd(~c"kill -KILL #{Corral.Port.os_pid(pid)}")
    check(:killed_exit_seen_by_link, exit_reason(pid), {:port_exited, 128 + 9})
    {:ok, failing} = Corral.Port.start_link("port_handlers:FailingSetup", opts)
    check(:setup_failed_exit, exit_reason(failing), {:port_exited, 2})

    check(
      :bad_option,
      Corral.Port.start_link("port_handlers:Echo", [{:timeout, -1} | opts]),
      {:error, {:invalid_option, :timeout, "an integer >= 0 (ms) or :infinity", -1}}
    )

    receive do
      {:EXIT, _, _} -> :ok
    after
      0 -> :ok
    end

    supervised(opts)
    children = [{Corral.Port, {"port_handlers:Echo", [name: :echo] ++ opts}}]
    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
    check(:child_spec, Corral.Port.call(:echo, 8, 20_000), {:ok, 8})
    Process.unlink(sup)
    Supervisor.stop(sup)
    {:ok, stopped} = Corral.Port.start_link("port_handlers:Echo", opts)
    stopped_os_pid = Corral.Port.os_pid(stopped)
    check(:stop, Corral.Port.stop(stopped), :ok)
    check(:stopped_worker_gone, :os.cmd(~c"kill -0 #{stopped_os_pid}") != [], true)
    IO.puts("done")
    System.halt(0)
  end

  # A supervisor restarts a Corral.Port whose worker was SIGKILLed; the restarted one serves.
  def supervised(opts) do
    child = %{id: :model, start: {__MODULE__, :start_child, [self(), opts]}}
    {:ok, sup} = Supervisor.start_link([child], strategy: :one_for_one)
    first = started()
    ref = Process.monitor(first)
    :os.cmd(~c"kill -KILL #{Corral.Port.os_pid(first)}")

    reason =
      receive do
        {:DOWN, ^ref, :process, ^first, reason} -> reason
      after
        20_000 -> :timeout
      end

    check(:supervised_exit, reason, {:port_exited, 137})
    second = started()
    check(:supervisor_restarted, Corral.Port.call(second, 7, 20_000), {:ok, 7})
    Process.unlink(sup)
    Supervisor.stop(sup)
  end

  def start_child(test, opts) do
    {:ok, pid} = Corral.Port.start_link("port_handlers:Echo", opts)
    send(test, {:started, pid})
    {:ok, pid}
  end

  defp started do
    receive do
      {:started, pid} -> pid
    after
      20_000 -> :timeout
    end
  end

  defp error_parts({:error, {type, message, traceback}}) do
    last = traceback |> String.split("\n", trim: true) |> List.last()
    {type, message, last <> "\n"}
  end

  defp error_parts(other), do: other

  defp exit_reason(pid) do
    receive do
      {:EXIT, ^pid, reason} -> reason
    after
      20_000 -> :timeout
    end
  end

  defp check(name, got, want) do
    if got === want do
      IO.puts("ok #{name}")
    else
      IO.puts("FAIL #{name} got #{inspect(got)} want #{inspect(want)}")
      System.halt(1)
    end
  end
end

CorralPortClientTest.run(System.argv())
