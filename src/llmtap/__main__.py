from llmtap.cli import main

main()
